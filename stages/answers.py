"""Answers: the filter model answers every generated question by greedy decoding, and every check of what the
question presupposes (`models.presupposition`: all of them, whatever the filter rule asks, so that a changed
rule needs no model). One row per generated pair, with the filter's answer, its probability and the checks'
answers -> `Answers.OUTPUT`.

These answers depend on the generator's output, the filter checkpoint, the engine and the answer length, not
on the filter rule: a changed rule re-runs the filter stage alone, and `jade refilter` never loads a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from jade.formats.run_tables import ANSWERS, load_images
from jade.formats.samples import ShardRef
from jade.models import presupposition
from jade.models.backends import EngineOptions, make_backend
from jade.models.backends.base import Completion, Request
from jade.models.factory import JADE_META
from jade.models.tasks import answer_prompt, clean_text
from jade.pipeline.resources import StageResources
from jade.pipeline.rundir import RunDir
from jade.pipeline.stage import Runtime, ShardFiles, ShardResult, ShardStage, StageFiles

__all__ = [
    "AnswerSettings",
    "Answerer",
    "Answers",
    "CHECK_TOKENS",
]

CHECK_TOKENS = 3  # "yes" / "no" / a count


@dataclass(frozen=True)
class AnswerSettings:
    backend: str  # a registered backend (`models.backends`)
    max_answer_tokens: int


def _pair(
    key: str, q: dict, filter_answer: str | None, filter_score: float | None, checks: list[dict]
) -> dict:
    return {
        "key": key,
        "question": q["question"],
        "type": q["type"],
        "answer": q["answer"],
        "status": q["status"],
        "question_score": q["question_score"],
        "answer_score": q["answer_score"],
        "filter_answer": filter_answer,
        "filter_score": filter_score,
        "checks": checks,
        "jade_type": q.get("jade_type"),
        "region": q.get("region"),
    }


class Answerer:
    def __init__(self, stage: Answers, run: RunDir, runtime: Runtime):
        self.run, self.generated, self.s = run, stage.generated, stage.settings
        self.batch_size = runtime.batch_size
        self.backend = make_backend(
            self.s.backend,
            str(run.local_dir(run.rel(stage.model), JADE_META)),  # a local copy when on a store
            EngineOptions(stage.decode_rows, runtime.threads, stage.trust_remote_code),
        )

    def __call__(self, shard: ShardRef) -> ShardResult:
        generated = self.run.read_table(self.generated, shard.shard_id).to_pylist()
        pairs = self.answer(shard, generated)
        answered = sum(p["filter_answer"] is not None for p in pairs)
        checks = sum(len(p["checks"]) for p in pairs)
        table = pa.Table.from_pylist(pairs, schema=ANSWERS)
        counts = {"filter_answers": answered, "filter_checks": checks}
        return ShardResult({Answers.OUTPUT.path(shard.shard_id): table}, counts, len(generated))

    def answer(self, shard: ShardRef, generated: list[dict]) -> list[dict]:
        """Every answered question of the shard and every presupposition check of it, greedy, streaming the
        shard's images in chunks of `batch_size` images (each chunk through the vision encoder once, all its
        questions decoded together), so memory does not grow with the shard."""
        asked = {r["key"]: [q for q in r["qa"] if q["status"] == "ok" and q["answer"]] for r in generated}
        answers: dict[int, Completion] = {}
        checked: dict[tuple[str, str], str] = {}  # (key, check question) -> the filter's answer
        chunk: list = []

        def flush() -> None:
            reqs: list[Request] = []
            owners: list[int | tuple[str, str]] = []
            for i, (key, _) in enumerate(chunk):
                for q in asked[key]:
                    reqs.append(Request(i, answer_prompt(q["question"]), self.s.max_answer_tokens))
                    owners.append(id(q))
                for cq in dict.fromkeys(
                    c for q in asked[key] for c, _ in presupposition.checks(q["question"])
                ):
                    reqs.append(Request(i, answer_prompt(cq), CHECK_TOKENS))
                    owners.append((key, cq))
            if reqs:
                comps = self.backend.generate(self.backend.prepare([img for _, img in chunk]), reqs)
                for owner, c in zip(owners, comps, strict=True):
                    if isinstance(owner, tuple):
                        checked[owner] = clean_text(c[0].text)
                    else:
                        answers[owner] = c[0]
            chunk.clear()

        for key, img, _ in load_images(shard, {k for k, qs in asked.items() if qs}):
            chunk.append((key, img))
            if len(chunk) == self.batch_size:
                flush()
        flush()
        pairs = []
        for r in generated:
            for q in r["qa"]:
                comp = answers.get(id(q))
                checks = [
                    {"question": cq, "expect": want, "answer": checked[(r["key"], cq)]}
                    for cq, want in presupposition.checks(q["question"])
                    if comp
                ]
                pairs.append(
                    _pair(
                        r["key"],
                        q,
                        clean_text(comp.text) if comp else None,
                        comp.score if comp else None,
                        checks,
                    )
                )
        return pairs


class Answers(ShardStage):
    name = "answers"
    # bump when models.presupposition's checks change: the stored answers are then asked again
    version = 1
    OUTPUT = ShardFiles("_work/answers/{shard}.parquet")  # one row per generated pair (`ANSWERS`)
    outputs = (OUTPUT,)

    def __init__(
        self,
        settings: AnswerSettings,
        generated: ShardFiles,
        model: StageFiles,
        resources: StageResources,
        decode_rows: int = 256,
        trust_remote_code: bool = False,
    ):
        self.settings, self.generated, self.model, self.resources = settings, generated, model, resources
        self.decode_rows, self.trust_remote_code = decode_rows, trust_remote_code
        self.inputs = (generated, model)

    def worker(self, run: RunDir, runtime: Runtime) -> Answerer:
        return Answerer(self, run, runtime)
