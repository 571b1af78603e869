"""Filter: the filter model answers every generated question by greedy decoding; a pair is kept only when
both answers are equal after the official VQA v2 answer normalization (`filter.normalization`).

Every rejection goes to rejected/<shard>.parquet with the generator's answer, the filter's answer and the
reason (datatrove's "filters say why"): duplicate question, empty question, empty answer, answer mismatch,
low filter score.
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
from jade.pipeline.rundir import RunDir, atomic_write_parquet
from jade.pipeline.stage import Context
from jade.stages.generate import REGION_TYPE, load_images, run_shard_stage

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


def verdict(qa: dict, filter_answer: str | None, filter_score: float | None, rule: dict) -> str | None:
    """None to keep the pair, else the reason it is rejected."""
    if qa["status"] != "ok":
        return qa["status"]
    if not qa["answer"]:
        return "empty answer"
    if not answers_match(qa["answer"], filter_answer or "", rule["normalization"]):
        return "answer mismatch"
    if (filter_score or 0.0) < rule["min_score"]:
        return "low filter score"
    return None


class FilterWorker:
    def __init__(self, run_root: str, fp: str, settings: dict, batch_size: int, threads: int):
        self.run, self.fp, self.s = RunDir(run_root), fp, settings
        self.backend = make_backend(
            settings["backend"], str(self.run.checkpoint("filter")), max(batch_size, 32), threads
        )

    def __call__(self, item: dict) -> dict:
        shard = shards.ShardRef(**item["shard"])
        if rec := self.run.done("filter", self.fp, shard.shard_id):
            return rec
        generated = pq.read_table(self.run.work("generate") / f"{shard.shard_id}.parquet").to_pylist()
        by_key = {r["key"]: r for r in generated}
        needs_image = {r["key"] for r in generated if any(q["status"] == "ok" for q in r["qa"])}
        images, index = [], {}
        for key, img, _ in load_images(shard, set(needs_image)):
            index[key] = len(images)
            images.append(img)
        reqs, owners = [], []
        for r in generated:
            for q in r["qa"]:
                if q["status"] == "ok" and q["answer"]:
                    reqs.append(
                        Request(index[r["key"]], answer_prompt(q["question"]), self.s["max_answer_tokens"])
                    )
                    owners.append(id(q))
        answers = dict(zip(owners, self.backend.generate(images, reqs), strict=True))
        rows, rejected, stats = [], [], Counter()
        for key, r in by_key.items():
            kept = []
            for q in r["qa"]:
                comp = answers.get(id(q), [None])[0]
                fa = clean_text(comp.text) if comp else None
                fs = comp.score if comp else None
                reason = verdict(q, fa, fs, self.s)
                t = q["type"]
                if reason is None:
                    kept.append(
                        {
                            "question": q["question"],
                            "answer": q["answer"],
                            "type": t,
                            "filter_answer": fa,
                            "score": fs,
                        }
                    )
                    stats["qa_kept"] += 1
                    stats[f"qa_kept.{t}"] += 1
                else:
                    rejected.append({"key": key, "shard": shard.shard_id, "question": q["question"], "type": t,
                                     "answer": q["answer"], "filter_answer": fa, "reason": reason,
                                     "question_score": q["question_score"], "answer_score": q["answer_score"],
                                     "filter_score": fs})  # fmt: skip
                    stats["qa_rejected"] += 1
                    stats[f"qa_rejected.{t}"] += 1
                    stats[f"rejected_reason.{reason}"] += 1
            rows.append({"key": key, "qa": kept, "regions": r["regions"]})
        atomic_write_parquet(self.run.work("filter") / f"{shard.shard_id}.parquet",
                             pa.Table.from_pylist(rows, schema=FILTERED_SCHEMA))  # fmt: skip
        atomic_write_parquet(self.run.rejected / f"{shard.shard_id}.parquet",
                             pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA))  # fmt: skip
        rec = {"shard": shard.shard_id, "images": len(rows), **stats}
        self.run.mark_done("filter", self.fp, rec, shard.shard_id)
        return rec


class Filter:
    name = "filter"
    after = ("generate", "finetune_filter")

    def settings(self, m: Manifest) -> dict:
        return {"normalization": m.filter.normalization, "match": m.filter.match, "min_score": m.filter.min_score,
                "backend": m.generate.backend, "max_answer_tokens": m.generate.max_new_tokens.answer}  # fmt: skip

    def run(self, ctx: Context) -> dict:
        return run_shard_stage(
            ctx, self.name, FilterWorker, self.settings(ctx.manifest), ctx.manifest.resources.filter
        )
