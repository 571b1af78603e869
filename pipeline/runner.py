"""Runs a list of stages in order over a run directory, skipping what completion records say is done.

A whole stage's fingerprint is the hash of its settings and its upstream stages' fingerprints: a changed
setting re-runs that stage and the stages after it. A shard stage is fingerprinted per shard
(`pipeline.shardmap`): only the shards whose inputs changed are done again. The application (`app.runner`)
says which stages there are; this module knows none of them.
"""

from __future__ import annotations

import logging
import time

from jade.formats.samples import ShardRef
from jade.pipeline.config import Manifest
from jade.pipeline.executor import Executor, LocalExecutor
from jade.pipeline.rundir import RunDir, fingerprint
from jade.pipeline.shardmap import map_stage, settings_fingerprint, shard_fingerprints
from jade.pipeline.stage import Context

log = logging.getLogger("jade")
STAGE_VERSION = 2  # bump when the framework's records change, to invalidate old ones


def is_shard_stage(stage) -> bool:
    return hasattr(stage, "worker")


def stage_fingerprints(stages: list, m: Manifest) -> dict[str, str]:
    fps: dict[str, str] = {}
    for st in stages:
        if is_shard_stage(st):
            fps[st.name] = settings_fingerprint(st, st.settings(m))
        else:
            spec = {
                "stage": st.name,
                "v": STAGE_VERSION,
                "settings": st.settings(m),
                "after": [fps[a] for a in st.after],
            }
            if getattr(st, "version", None):  # a stage's own output-format version
                spec["stage_v"] = st.version
            fps[st.name] = fingerprint(spec)
    return fps


def plan(
    stages: list, m: Manifest, run: RunDir, shards: list[ShardRef], executor: Executor | None = None
) -> Context:  # noqa: E501
    """The context of a run as it stands on disk: stage fingerprints, and each shard stage's per-shard
    fingerprints given its upstream stages' current outputs (what `jade status` and `--stages` rely on)."""
    ctx = Context(
        manifest=m,
        run=run,
        executor=executor or LocalExecutor(),
        shards=shards,
        fingerprints=stage_fingerprints(stages, m),
        shard_stages={st.name for st in stages if is_shard_stage(st)},
    )
    for st in stages:
        if is_shard_stage(st):
            ctx.shard_fps[st.name] = {k: v for k, v in shard_fingerprints(ctx, st, shards).items() if v}
    return ctx


def execute(
    stages: list,
    m: Manifest,
    run: RunDir,
    shards: list[ShardRef],
    executor: Executor,
    only: list[str] | None = None,
    allow_models: bool = True,
) -> dict[str, dict]:
    """Run ``stages`` (all, or the ones named in ``only``) in order; returns each stage's summary. A shard stage
    with failed shards is incomplete: its summary lists them under ``failed_shards``. With ``allow_models``
    false, a shard stage that would need to run a model fails that shard instead (`jade refilter`)."""
    ctx = Context(
        manifest=m,
        run=run,
        executor=executor,
        shards=shards,
        fingerprints=stage_fingerprints(stages, m),
        shard_stages={st.name for st in stages if is_shard_stage(st)},
        allow_models=allow_models,
    )
    summaries: dict[str, dict] = {}
    for st in stages:
        fp = ctx.fp(st.name)
        if only and st.name not in only:
            if is_shard_stage(st):  # not run now, but later stages read its current outputs
                ctx.shard_fps[st.name] = {k: v for k, v in shard_fingerprints(ctx, st, shards).items() if v}
            continue
        t0 = time.time()
        if is_shard_stage(st):
            summary = map_stage(ctx, st)
            published = sorted(ctx.shard_fps[st.name].keys() - set(summary.get("failed_shards", {})))
            if hasattr(st, "finish"):
                summary["stats"] = st.finish(ctx, published)
            summary["seconds"] = round(time.time() - t0, 1)
            complete = not summary.get("failed_shards")
            summary["skipped"] = complete and summary["shards_run"] == 0  # nothing was left to do
            run.mark_done(st.name, fp, {**summary, "complete": complete, "shard_fps": ctx.shard_fps[st.name]})
            summaries[st.name] = summary
            done = "done" if complete else f"{len(summary['failed_shards'])} shard(s) failed or left out"
            log.info(
                "%s: %s (%d shards, %d run) in %.1fs",
                st.name,
                done,
                summary["shards"],
                summary["shards_run"],
                summary["seconds"],
            )
            continue
        if rec := run.done(st.name, fp):
            log.info("%s: up to date, skipped", st.name)
            summaries[st.name] = {**rec, "skipped": True}
            continue
        log.info("%s: running", st.name)
        summary = st.run(ctx)
        summary["seconds"] = round(time.time() - t0, 1)
        run.mark_done(st.name, fp, summary)
        summaries[st.name] = summary
        log.info("%s: done in %.1fs", st.name, summary["seconds"])
    return summaries
