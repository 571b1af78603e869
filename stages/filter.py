"""Filter, in two steps:

1. The filter model answers every generated question by greedy decoding. Its answer and probability are
   stored for every pair in `_work/filter/answers/<shard>.parquet`, under the fingerprint of what they
   depend on (the generator's output, the filter checkpoint, backend, answer length), not of the rule.
2. The rule (`apply_rule`, a pure function) keeps a pair only when both answers are equal after the
   official VQA v2 answer normalization (`filter.normalization`, `filter.match`) and the filter's answer
   probability is at least `filter.min_score`.

A changed rule re-runs step 2 only, without loading a model (`jade run --set filter.min_score=0.3`, `jade
refilter`). Every rejection goes to rejected/<shard>.parquet with the generator's answer, the filter's
answer and the reason (datatrove's "filters say why"): duplicate question, empty question, empty answer,
answer mismatch, low filter score, and the ill-posed: "no such object" / "not one object" when the filter
model, asked what the question presupposes ("Is there a red circle?", "How many red circles are there?" for
"What color is the red circle?", `filter.presupposition`), says there is none or not exactly one.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from jade.formats.run_tables import ANSWERS, FILTERED, REJECTED, load_images
from jade.formats.samples import ShardRef
from jade.models import presupposition
from jade.models.backends import make_backend
from jade.models.backends.base import Completion, Request
from jade.models.tasks import answer_prompt, clean_text
from jade.models.vqa_normalize import answers_match
from jade.pipeline import config
from jade.pipeline.config import QUESTION_TYPES, Manifest, StageResources
from jade.pipeline.rundir import RunDir, fingerprint
from jade.pipeline.stage import Runtime, ShardResult

MODEL_FP_KEY = b"jade_filter_model_fingerprint"
CHECKS_VERSION = 1  # of models.presupposition's checks: stored answers of another version are asked again
CHECK_TOKENS = 3  # "yes" / "no" / a count


@dataclass(frozen=True)
class FilterSettings:
    rule: config.Filter
    backend: str
    max_answer_tokens: int


def verdict(pair: dict, rule: config.Filter) -> tuple[str | None, str | None]:
    """(None, None) to keep the pair, else (the reason it is rejected, the presupposition check that failed)."""
    if pair["status"] != "ok":
        return pair["status"], None  # duplicate question, empty question (found by generate)
    if not pair["answer"]:
        return "empty answer", None
    if not answers_match(pair["answer"], pair["filter_answer"] or "", rule.normalization):
        return "answer mismatch", None
    if (pair["filter_score"] or 0.0) < rule.min_score:
        return "low filter score", None
    wanted = dict(presupposition.checks(pair["question"], rule.presupposition))
    for c in pair.get("checks") or []:
        if c["question"] in wanted and not answers_match(c["answer"] or "", c["expect"], "vqa"):
            reason = presupposition.failure(c["expect"], c["answer"] or "")
            return reason, presupposition.record(c["question"], c["answer"])
    return None, None


def apply_rule(
    pairs: list[dict], rule: config.Filter, shard_id: str
) -> tuple[dict[str, list], list[dict], dict]:
    """Split answered pairs into kept pairs (per key), rejected rows and counts (kept and rejected, overall and
    by type; rejections by reason)."""
    kept: dict[str, list] = {}
    rejected: list[dict] = []
    total: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    by_type: dict[str, Counter] = {t: Counter() for t in QUESTION_TYPES}
    for p in pairs:
        t = p["type"]
        reason, check = verdict(p, rule)
        if reason is None:
            kept.setdefault(p["key"], []).append(
                {
                    "question": p["question"],
                    "answer": p["answer"],
                    "type": t,
                    "filter_answer": p["filter_answer"],
                    "score": p["filter_score"],
                }
            )
            total["qa_kept"] += 1
            by_type.setdefault(t, Counter())["qa_kept"] += 1
        else:
            rejected.append(
                {
                    "key": p["key"],
                    "shard": shard_id,
                    "question": p["question"],
                    "type": t,
                    "answer": p["answer"],
                    "filter_answer": p["filter_answer"],
                    "reason": reason,
                    "question_score": p["question_score"],
                    "answer_score": p["answer_score"],
                    "filter_score": p["filter_score"],
                    "check": check,
                }
            )
            total["qa_rejected"] += 1
            reasons[reason] += 1
            by_type.setdefault(t, Counter())["qa_rejected"] += 1
    counts = {
        "qa_kept": total["qa_kept"],
        "qa_rejected": total["qa_rejected"],
        "rejected_by_reason": dict(reasons),
        "by_type": {t: dict(c) for t, c in by_type.items() if c},
    }
    return kept, rejected, counts


# -------------------------------------------------------------------------------- stored model answers
def model_fingerprint(generated_fp: str, filter_fp: str, settings: FilterSettings) -> str:
    """What the filter model's answers to a shard depend on (and the rule does not): the generator's output
    for the shard, the filter checkpoint, the engine and the answer length."""
    return fingerprint(
        {
            "generated": generated_fp,
            "finetune_filter": filter_fp,
            "backend": settings.backend,
            "max_answer_tokens": settings.max_answer_tokens,
            "checks": CHECKS_VERSION,
        }
    )


def answers_path(run: RunDir, shard_id: str):
    return run.work("filter") / "answers" / f"{shard_id}.parquet"


def read_answers(run: RunDir, shard_id: str, model_fp: str) -> list[dict] | None:
    """The stored answers of a shard if they were made under `model_fp`, else None."""
    path = answers_path(run, shard_id)
    if not path.exists():
        return None
    table = pq.read_table(path)
    if (table.schema.metadata or {}).get(MODEL_FP_KEY) != model_fp.encode():
        return None
    return table.to_pylist()


def answers_table(model_fp: str, pairs: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(pairs, schema=ANSWERS.with_metadata({MODEL_FP_KEY: model_fp.encode()}))


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
    }


class FilterWorker:
    def __init__(self, run: RunDir, settings: FilterSettings, runtime: Runtime):
        self.run, self.s, self.runtime = run, settings, runtime
        self._backend = None  # loaded on first need: a changed rule alone never loads the model

    @property
    def backend(self):
        if self._backend is None:
            self._backend = make_backend(
                self.s.backend,
                str(self.run.checkpoint("filter")),
                self.runtime.decode_rows,
                self.runtime.threads,
            )
        return self._backend

    def __call__(self, shard: ShardRef) -> ShardResult:
        generated_path = self.run.work("generate") / f"{shard.shard_id}.parquet"
        generated = pq.read_table(generated_path).to_pylist()
        generated_fp = hashlib.sha256(generated_path.read_bytes()).hexdigest()[:16]
        model_fp = model_fingerprint(generated_fp, self.runtime.fingerprint_of("finetune_filter"), self.s)
        pairs = read_answers(self.run, shard.shard_id, model_fp)
        if pairs is None:  # a changed rule alone re-uses the stored answers
            if not self.runtime.allow_models:
                raise RuntimeError(
                    f"the filter model has not answered shard {shard.shard_id}; `jade run` it first"
                )
            pairs = self.answer(shard, generated)
        kept, rejected, counts = apply_rule(pairs, self.s.rule, shard.shard_id)
        rows = [{"key": r["key"], "qa": kept.get(r["key"], []), "regions": r["regions"]} for r in generated]
        tables = {
            f"_work/filter/{shard.shard_id}.parquet": pa.Table.from_pylist(rows, schema=FILTERED),
            f"rejected/{shard.shard_id}.parquet": pa.Table.from_pylist(rejected, schema=REJECTED),
            f"_work/filter/answers/{shard.shard_id}.parquet": answers_table(model_fp, pairs),
        }
        return ShardResult(tables, counts, len(rows))

    def answer(self, shard: ShardRef, generated: list[dict]) -> list[dict]:
        """Step 1: the filter model answers every answered question of the shard, and every presupposition
        check of it (`models.presupposition`: all of them, whatever the rule asks, so that a changed rule needs
        no model), greedy, streaming the shard's images in chunks of `batch_size` images (each chunk through
        the vision encoder once, all its questions decoded together), so memory does not grow with the shard."""
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
            if len(chunk) == self.runtime.batch_size:
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


class Filter:
    name = "filter"
    after = ("generate", "finetune_filter")

    def settings(self, m: Manifest) -> FilterSettings:
        return FilterSettings(m.filter, m.generate.backend, m.generate.max_new_tokens.answer)

    def resources(self, m: Manifest) -> StageResources:
        return m.resources.filter

    def owns(self, shard_id: str) -> list[str]:
        return [
            f"_work/filter/{shard_id}.parquet",
            f"rejected/{shard_id}.parquet",
            f"_work/filter/answers/{shard_id}.parquet",
        ]

    def worker(self, run: RunDir, settings: FilterSettings, runtime: Runtime) -> FilterWorker:
        return FilterWorker(run, settings, runtime)
