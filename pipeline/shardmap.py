"""The books every shard stage shares, kept once: map a `ShardStage` over the run's shards.

Per shard: skip it when its completion record carries the shard's fingerprint; else run the stage's worker,
write the tables it returns (temporary name, rename), remove the shard's files that the new result does not
rewrite, and write the completion record last (its counts, the number of images, and a fingerprint of the
files written). A shard that raises is recorded with its error (`_state/<stage>/_failed/<shard>.json`) and left
out of the later stages while the other shards complete; a re-run retries it.

A shard's fingerprint is the hash of the stage's settings, the shard itself, the whole stages it reads
(their fingerprints: a fine-tuned checkpoint) and the *outputs* of the shard stages it reads for that shard
(their records' ``output_fp``). So adding a shard runs only that shard; a setting that changes one stage's
output re-runs that stage and, only where its output really changed, the later ones. A stage with
``reads_earlier = True`` (deduplication) also depends on the outputs of every shard before this one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import asdict

from jade.formats.samples import ShardRef
from jade.pipeline.progress import Progress
from jade.pipeline.rundir import STATE, RunDir, fingerprint
from jade.pipeline.stage import Context, Runtime, ShardStage
from jade.pipeline.stats import sum_counts

__all__ = [
    "ShardTask",
    "commit",
    "map_stage",
    "output_fingerprint",
    "owned_files",
    "prune",
    "settings_fingerprint",
    "shard_fingerprints",
]

log = logging.getLogger("jade")


def settings_fingerprint(stage: ShardStage) -> str:
    return fingerprint({"stage": stage.name, "v": stage.version, "settings": stage.settings})


def shard_fingerprints(ctx: Context, stage: ShardStage, shards: list[ShardRef]) -> dict[str, str | None]:
    """Fingerprint per shard, None where an upstream shard stage has no current output for it."""
    own = ctx.fp(stage.name)
    after = ctx.upstream(stage)
    upstream_shard = [a.name for a in after if isinstance(a, ShardStage)]
    whole = {a.name: ctx.fp(a.name) for a in after if not isinstance(a, ShardStage)}
    outputs: dict[str, dict[str, str | None]] = {a: {} for a in upstream_shard}
    for a in upstream_shard:
        theirs = ctx.shard_fps.get(a, {})
        recs = ctx.run.done_many(a, {s.shard_id: theirs.get(s.shard_id) or "" for s in ctx.shards})
        for s in ctx.shards:
            rec = recs[s.shard_id]
            outputs[a][s.shard_id] = rec["output_fp"] if rec else None
    earlier = _earlier(ctx.shards, outputs) if stage.reads_earlier else {}
    fps: dict[str, str | None] = {}
    for s in shards:
        mine = {a: outputs[a][s.shard_id] for a in upstream_shard}
        if any(v is None for v in mine.values()):
            fps[s.shard_id] = None
            continue
        spec = {"stage": own, "shard": asdict(s), "whole": whole, "inputs": mine}
        if stage.reads_earlier:
            spec["earlier"] = earlier[s.shard_id]
        fps[s.shard_id] = fingerprint(spec)
    return fps


def _earlier(shards: list[ShardRef], outputs: dict[str, dict[str, str | None]]) -> dict[str, dict[str, str]]:
    """Per shard, a digest of every earlier shard's upstream outputs (in run order), chained: each shard's is
    the hash of the previous one's and that shard's outputs, so the whole run costs O(shards), not O(shards²)."""
    chain = {a: "" for a in outputs}
    out = {}
    for s in shards:
        out[s.shard_id] = dict(chain)
        for a, by_shard in outputs.items():
            if by_shard[s.shard_id]:
                chain[a] = hashlib.sha256(
                    f"{chain[a]}|{s.shard_id}|{by_shard[s.shard_id]}".encode()
                ).hexdigest()[:16]
    return out


def output_fingerprint(run: RunDir, paths: list[str]) -> str:
    h = hashlib.sha256()
    for rel in sorted(paths):
        h.update(rel.encode() + b"\0")
        with run.open(rel) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def _pending(stage: ShardStage, shard_id: str) -> str:
    """A commit's intent, relative to the run directory: the files it may leave if it does not finish."""
    return f"{STATE}/{stage.name}/_pending/{shard_id}.json"


def owned_files(run: RunDir, stage: ShardStage, shard_id: str) -> set[str]:
    """Every file of this stage's for a shard that exists: its exact paths (`owns` without wildcards), and the
    files that its last record, or a commit that did not finish, names. Without either (records written before
    records named their files), the `owns` globs: a directory listing per shard, which grows with the run."""
    exact = [g for g in stage.owns(shard_id) if not any(c in g for c in "*?[")]
    named = set()
    for rel in (run.record_rel(stage.name, shard_id), _pending(stage, shard_id)):
        rec = run.read_json(rel)
        if rec and "files" in rec:
            named |= set(rec["files"])
    if not named and len(exact) < len(stage.owns(shard_id)):
        named = {rel for g in stage.owns(shard_id) for rel in run.glob(g)}
    return {rel for rel in {*exact, *named} if run.exists(rel)}


def commit(
    run: RunDir, stage: ShardStage, shard: ShardRef, fp: str, result, timing: dict | None = None
) -> dict:
    """Write a shard's result: first the intent (the files it will write, and the ones it may replace), then the
    tables, then the stale files removed, then the completion record (last), which names its files. A commit
    killed half-way leaves its intent, so the next one knows every file it may have left."""
    old = owned_files(run, stage, shard.shard_id)
    new = sorted(result.tables)
    run.write_json(_pending(stage, shard.shard_id), {"files": sorted(old | set(new))}, indent=None)
    for rel, table in result.tables.items():
        run.write_parquet(rel, table)
    for stale in old - set(new):
        run.remove(stale)
    rec = {
        "shard": shard.shard_id,
        "images": result.images,
        "counts": result.counts,
        **result.note,
        "output_fp": output_fingerprint(run, new),
        "files": new,
        **(timing or {}),
    }
    run.mark_done(stage.name, fp, rec, shard.shard_id)
    run.remove(_pending(stage, shard.shard_id))
    return rec


class ShardTask:
    """Picklable, it travels to the workers: builds the stage's worker once, then works and commits shards."""

    def __init__(self, stage: ShardStage, run_root: str, runtime: Runtime):
        self.stage, self.run_root, self.runtime = stage, run_root, runtime

    def __call__(self):
        run = RunDir(self.run_root)
        worker = self.stage.worker(run, self.runtime)

        def one(item: dict) -> dict:
            shard = ShardRef(**item["shard"])
            t0, c0 = time.time(), time.process_time()
            result = worker(shard)
            # the shard's own cost in the record: wall seconds, and CPU seconds of the worker's process (what
            # other load on the machine does not inflate)
            timing = {
                "work_seconds": round(time.time() - t0, 3),
                "cpu_seconds": round(time.process_time() - c0, 3),
            }
            rec = commit(run, self.stage, shard, item["fp"], result, timing)
            return {**rec, "seconds": round(time.time() - t0, 3)}

        return one


def prune(run: RunDir, stage: ShardStage, keep: set[str]) -> list[str]:
    """Remove the files and records of shards that are not (or no longer) this stage's current output."""
    gone = []
    for rec in run.glob(f"{STATE}/{stage.name}/*.json"):
        shard = rec.rsplit("/", 1)[-1][: -len(".json")]
        if shard.startswith("_") or shard in keep:
            continue
        for rel in owned_files(run, stage, shard):
            run.remove(rel)
        run.remove(rec)
        run.remove(_pending(stage, shard))
        gone.append(shard)
    for intent in run.glob(f"{STATE}/{stage.name}/_pending/*.json"):  # commits that never finished
        shard = intent.rsplit("/", 1)[-1][: -len(".json")]
        if shard not in keep:
            for rel in owned_files(run, stage, shard):
                run.remove(rel)
            run.remove(intent)
    return gone


def map_stage(ctx: Context, stage: ShardStage) -> dict:
    """Run ``stage`` over every shard of the run that is not done; returns the stage summary."""
    run = ctx.run
    shards = [s for s in ctx.shards if s.shard_id not in ctx.failed_shards]
    fps = shard_fingerprints(ctx, stage, shards)
    ctx.shard_fps[stage.name] = {k: v for k, v in fps.items() if v}
    left_out = {
        **{s: ctx.failed_shards[s] for s in ctx.failed_shards},
        **{s: {"stage": stage.name, "error": "no upstream output"} for s, v in fps.items() if v is None},
    }
    current = [s for s in shards if fps[s.shard_id]]
    have = run.done_many(stage.name, {s.shard_id: fps[s.shard_id] or "" for s in current})
    todo = [s for s in current if not have[s.shard_id]]
    res = stage.resources
    threads = ctx.threads or max(1, (os.cpu_count() or 1) // max(1, res.pool()[1]))
    runtime = Runtime(
        batch_size=res.batch_size,
        threads=threads,
        inputs=tuple((i, ctx.fp(ctx.producer(i).name)) for i in stage.inputs),
        own=ctx.fp(stage.name),
        shard_order=tuple(s.shard_id for s in ctx.shards),
    )
    items = [
        {"stage": stage.name, "shard_id": s.shard_id, "shard": asdict(s), "fp": fps[s.shard_id]} for s in todo
    ]
    if todo:
        log.info("%s: %d of %d shards to do", stage.name, len(todo), len(current))
    if todo:
        stage.prepare(ctx, current)
    progress = Progress(run, stage.name, ctx.fp(stage.name), len(items))
    try:
        results = (
            ctx.executor.map_shards(
                ShardTask(stage, run.url, runtime), items, res, on_result=progress, name=stage.name
            )
            if items
            else []
        )
    except BaseException as e:  # interrupted (a signal) or the executor failed: say where it stopped
        progress.stop(e)
        raise
    failed = {}
    for r in results:
        if r.get("error"):
            run.mark_failed(stage.name, fps[r["shard"]] or "", {**r, "failed_at": time.time()}, r["shard"])
            failed[r["shard"]] = {"stage": stage.name, "error": r["error"]}
            log.error("%s: shard %s failed: %s", stage.name, r["shard"], r["error"])
        else:
            run.clear_failed(stage.name, r["shard"])
    ctx.failed_shards.update(failed)
    ok = {s.shard_id for s in current} - set(failed)
    prune(run, stage, ok)  # shards removed from the manifest, or left out now: their old outputs are stale
    records = list(run.done_many(stage.name, {s: fps[s] or "" for s in sorted(ok)}).values())
    summary = {
        "shards": len(ok),
        "shards_run": len(results) - len(failed),
        "counts": sum_counts(r["counts"] for r in records if r),
    }
    if failed or left_out:
        summary["failed_shards"] = {**left_out, **failed}
    return summary
