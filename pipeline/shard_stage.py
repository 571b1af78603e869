"""What every per-shard stage shares: the schema of a dense-caption region, streaming a shard's usable images,
and mapping a per-shard worker over the ingested shards with failed-shard bookkeeping. Stages import this,
never each other."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter

import pyarrow as pa

from jade.formats import shards
from jade.pipeline.executor import WorkerFactory
from jade.pipeline.progress import Progress
from jade.pipeline.rundir import read_json
from jade.pipeline.stage import Context

log = logging.getLogger("jade")

REGION_TYPE = pa.struct(
    [("bbox", pa.list_(pa.float32(), 4)), ("caption", pa.string()), ("score", pa.float32())]
)


def load_images(shard: shards.ShardRef, keys: set[str]):
    """(key, PIL image, raw bytes) for the usable keys of a shard, in shard order (streamed)."""
    for s in shards.iter_shard(shard):
        if s.error is None and s.key in keys:
            keys.discard(s.key)  # a duplicate key was recorded as a failure at ingest; use the first
            yield s.key, shards.decode_image(s.image_bytes), s.image_bytes


def run_shard_stage(ctx: Context, name: str, worker_cls, settings: dict, res) -> dict:
    """Map a per-shard worker over every ingested shard. A shard that fails is recorded with its error
    (`_state/<stage>/_failed/<shard>.json`) and left out of the later stages while the other shards complete;
    the summary lists it under `failed_shards`, and a re-run retries it."""
    shard_list = read_json(ctx.run.work("ingest") / "shards.json") or []
    left_out = {s["shard_id"]: ctx.failed_shards[s["shard_id"]] for s in shard_list
                if s["shard_id"] in ctx.failed_shards}  # fmt: skip
    items = [
        {"stage": name, "shard_id": s["shard_id"], "shard": {k: s[k] for k in ("shard_id", "url", "format")}}
        for s in shard_list
        if s["shard_id"] not in left_out
    ]
    threads = ctx.manifest.resources.threads or max(1, (os.cpu_count() or 1) // max(1, res.pool()[1]))
    fp = ctx.fp(name)
    factory = WorkerFactory(worker_cls, str(ctx.run.root), fp, settings, res.batch_size, threads)
    results = ctx.executor.map_shards(factory, items, res, on_result=Progress(ctx.run, name, fp, len(items)))
    failed, total = {}, Counter()
    for r in results:
        if r.get("error"):
            ctx.run.mark_failed(name, fp, {**r, "failed_at": time.time()}, r["shard"])
            failed[r["shard"]] = {"stage": name, "error": r["error"]}
            log.error("%s: shard %s failed: %s", name, r["shard"], r["error"])
        else:
            ctx.run.clear_failed(name, r["shard"])
            total.update({k: v for k, v in r.items() if isinstance(v, int) and not isinstance(v, bool)})
    ctx.failed_shards.update(failed)
    summary = {"shards": len(results) - len(failed), **total}
    if failed or left_out:
        summary["failed_shards"] = {**left_out, **failed}
    return summary
