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
answer mismatch, low filter score.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

from jade.formats import shards
from jade.models.backends import make_backend
from jade.models.backends.base import Request
from jade.models.tasks import answer_prompt, clean_text
from jade.models.vqa_normalize import answers_match
from jade.pipeline.config import Manifest
from jade.pipeline.rundir import RunDir, atomic_write_parquet, fingerprint
from jade.pipeline.shard_stage import REGION_TYPE, load_images, run_shard_stage
from jade.pipeline.stage import Context

KEPT_QA = pa.struct(
    [("question", pa.string()), ("answer", pa.string()), ("type", pa.string()), ("filter_answer", pa.string()),
     ("score", pa.float32())]
)  # fmt: skip
FILTERED_SCHEMA = pa.schema(
    [("key", pa.string()), ("qa", pa.list_(KEPT_QA)), ("regions", pa.list_(REGION_TYPE))]
)
REJECTED_SCHEMA = pa.schema(
    [("key", pa.string()), ("shard", pa.string()), ("question", pa.string()), ("type", pa.string()),
     ("answer", pa.string()), ("filter_answer", pa.string()), ("reason", pa.string()),
     ("question_score", pa.float32()), ("answer_score", pa.float32()), ("filter_score", pa.float32())]
)  # fmt: skip
# One row per generated pair, in generation order: everything the rule needs (step 1's output).
ANSWERS_SCHEMA = pa.schema(
    [("key", pa.string()), ("question", pa.string()), ("type", pa.string()), ("answer", pa.string()),
     ("status", pa.string()), ("question_score", pa.float32()), ("answer_score", pa.float32()),
     ("filter_answer", pa.string()), ("filter_score", pa.float32())]
)  # fmt: skip
MODEL_FP_KEY = b"jade_filter_model_fingerprint"


def verdict(pair: dict, rule: dict) -> str | None:
    """None to keep the pair, else the reason it is rejected."""
    if pair["status"] != "ok":
        return pair["status"]  # duplicate question, empty question (found by generate)
    if not pair["answer"]:
        return "empty answer"
    if not answers_match(pair["answer"], pair["filter_answer"] or "", rule["normalization"]):
        return "answer mismatch"
    if (pair["filter_score"] or 0.0) < rule["min_score"]:
        return "low filter score"
    return None


def apply_rule(pairs: list[dict], rule: dict, shard_id: str) -> tuple[dict[str, list], list[dict], Counter]:
    """Split answered pairs into kept pairs (per key), rejected rows and counts (by type and reason)."""
    kept: dict[str, list] = {}
    rejected, stats = [], Counter()
    for p in pairs:
        t = p["type"]
        reason = verdict(p, rule)
        if reason is None:
            kept.setdefault(p["key"], []).append({"question": p["question"], "answer": p["answer"], "type": t,
                                                  "filter_answer": p["filter_answer"], "score": p["filter_score"]})  # fmt: skip
            stats["qa_kept"] += 1
            stats[f"qa_kept.{t}"] += 1
        else:
            rejected.append({"key": p["key"], "shard": shard_id, "question": p["question"], "type": t,
                             "answer": p["answer"], "filter_answer": p["filter_answer"], "reason": reason,
                             "question_score": p["question_score"], "answer_score": p["answer_score"],
                             "filter_score": p["filter_score"]})  # fmt: skip
            stats["qa_rejected"] += 1
            stats[f"qa_rejected.{t}"] += 1
            stats[f"rejected_reason.{reason}"] += 1
    return kept, rejected, stats


# -------------------------------------------------------------------------------- stored model answers
def model_fingerprint(fps: dict[str, str], settings: dict) -> str:
    """What the filter model's answers depend on (and the rule does not)."""
    return fingerprint({"generate": fps["generate"], "finetune_filter": fps["finetune_filter"],
                        "backend": settings["backend"], "max_answer_tokens": settings["max_answer_tokens"]})  # fmt: skip


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


def write_answers(run: RunDir, shard_id: str, model_fp: str, pairs: list[dict]) -> None:
    schema = ANSWERS_SCHEMA.with_metadata({MODEL_FP_KEY: model_fp.encode()})
    atomic_write_parquet(answers_path(run, shard_id), pa.Table.from_pylist(pairs, schema=schema))


def _pair(key: str, q: dict, filter_answer: str | None, filter_score: float | None) -> dict:
    return {"key": key, "question": q["question"], "type": q["type"], "answer": q["answer"], "status": q["status"],
            "question_score": q["question_score"], "answer_score": q["answer_score"],
            "filter_answer": filter_answer, "filter_score": filter_score}  # fmt: skip


def answers_from_outputs(run: RunDir, shard_id: str) -> list[dict]:
    """A shard's answers rebuilt from its filtered and rejected outputs, for runs filtered before answers
    were stored apart: every answered pair is in one of the two, with the filter's answer and score (an
    answered question is unique per image: repeats are "duplicate question" and never answered)."""
    generated = pq.read_table(run.work("generate") / f"{shard_id}.parquet").to_pylist()
    found = {}
    for r in pq.read_table(run.work("filter") / f"{shard_id}.parquet").to_pylist():
        for q in r["qa"]:
            found[(r["key"], q["question"])] = (q["filter_answer"], q["score"])
    for r in pq.read_table(run.rejected / f"{shard_id}.parquet").to_pylist():
        if r["filter_answer"] is not None or r["filter_score"] is not None:
            found[(r["key"], r["question"])] = (r["filter_answer"], r["filter_score"])
    pairs = []
    for r in generated:
        for q in r["qa"]:
            answered = q["status"] == "ok" and bool(q["answer"])
            if answered and (r["key"], q["question"]) not in found:
                raise ValueError(
                    f"shard {shard_id}: no filter answer stored for {r['key']}: {q['question']!r}"
                )
            pairs.append(
                _pair(r["key"], q, *(found[(r["key"], q["question"])] if answered else (None, None)))
            )
    return pairs


class FilterWorker:
    def __init__(self, run_root: str, fp: str, settings: dict, batch_size: int, threads: int):
        self.run, self.fp, self.s = RunDir(run_root), fp, settings
        self.batch_size, self.threads = batch_size, threads
        self._backend = None  # loaded on first need: a changed rule alone never loads the model

    @property
    def backend(self):
        if self._backend is None:
            self._backend = make_backend(self.s["backend"], str(self.run.checkpoint("filter")),
                                         max(self.batch_size, 32), self.threads)  # fmt: skip
        return self._backend

    def __call__(self, item: dict) -> dict:
        shard = shards.ShardRef(**item["shard"])
        if rec := self.run.done("filter", self.fp, shard.shard_id):
            return rec
        generated = pq.read_table(self.run.work("generate") / f"{shard.shard_id}.parquet").to_pylist()
        model_fp = self.s.get("model_fp")  # None: answer afresh, store nothing (benchmarks)
        pairs = read_answers(self.run, shard.shard_id, model_fp) if model_fp else None
        if pairs is None:
            pairs = self.answer(shard, generated)
            if model_fp:
                write_answers(self.run, shard.shard_id, model_fp, pairs)
        kept, rejected, stats = apply_rule(pairs, self.s, shard.shard_id)
        rows = [{"key": r["key"], "qa": kept.get(r["key"], []), "regions": r["regions"]} for r in generated]
        atomic_write_parquet(self.run.work("filter") / f"{shard.shard_id}.parquet",
                             pa.Table.from_pylist(rows, schema=FILTERED_SCHEMA))  # fmt: skip
        atomic_write_parquet(self.run.rejected / f"{shard.shard_id}.parquet",
                             pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA))  # fmt: skip
        rec = {"shard": shard.shard_id, "images": len(rows), **stats}
        self.run.mark_done("filter", self.fp, rec, shard.shard_id)
        return rec

    def answer(self, shard: shards.ShardRef, generated: list[dict]) -> list[dict]:
        """Step 1: the filter model answers every answered question of the shard, greedy, streaming the
        shard's images in chunks of `batch_size` images (each chunk through the vision encoder once, all its
        questions decoded together), so memory does not grow with the shard."""
        asked = {r["key"]: [q for q in r["qa"] if q["status"] == "ok" and q["answer"]] for r in generated}
        answers: dict[int, object] = {}
        chunk: list = []

        def flush() -> None:
            reqs, owners = [], []
            for i, (key, _) in enumerate(chunk):
                for q in asked[key]:
                    reqs.append(Request(i, answer_prompt(q["question"]), self.s["max_answer_tokens"]))
                    owners.append(id(q))
            if reqs:
                comps = self.backend.generate(self.backend.prepare([img for _, img in chunk]), reqs)
                answers.update(zip(owners, (c[0] for c in comps), strict=True))
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
                pairs.append(
                    _pair(r["key"], q, clean_text(comp.text) if comp else None, comp.score if comp else None)
                )
        return pairs


class Filter:
    name = "filter"
    after = ("generate", "finetune_filter")

    def settings(self, m: Manifest) -> dict:
        return {"normalization": m.filter.normalization, "match": m.filter.match, "min_score": m.filter.min_score,
                "backend": m.generate.backend, "max_answer_tokens": m.generate.max_new_tokens.answer}  # fmt: skip

    def run(self, ctx: Context) -> dict:
        settings = self.settings(ctx.manifest)
        settings["model_fp"] = model_fingerprint(ctx.fingerprints, settings)
        return run_shard_stage(ctx, self.name, FilterWorker, settings, ctx.manifest.resources.filter)
