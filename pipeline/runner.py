"""Runs a list of stages in order over a run directory, skipping what completion records say is done.

A whole stage's fingerprint is the hash of its settings and its upstream stages' fingerprints: a changed
setting re-runs that stage and the stages after it. A shard stage is fingerprinted per shard
(`pipeline.shardmap`): only the shards whose inputs changed are done again. Which stage a stage reads from
comes from the inputs it declares (the stage that declares them as outputs). The application says which
stages there are; this module knows none of them.
"""

from __future__ import annotations

import logging
import time

from jade.formats.samples import ShardRef
from jade.pipeline.executor import Executor, LocalExecutor
from jade.pipeline.progress import stop_reason
from jade.pipeline.rundir import RunDir, fingerprint
from jade.pipeline.shardmap import map_stage, settings_fingerprint, shard_fingerprints
from jade.pipeline.stage import Context, ShardStage, Stage, WholeStage

log = logging.getLogger("jade")
STAGE_VERSION = 2  # bump when the framework's records change, to invalidate old ones


def check_graph(stages: list[Stage]) -> None:
    """Names are unique, every input is written by an earlier stage, and no two stages write the same files."""
    names = [st.name for st in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names repeat: {names}")
    written: dict = {}
    for st in stages:
        for i in st.inputs:
            if i not in written:
                raise ValueError(f"stage {st.name} reads {i}, which no earlier stage writes")
        for o in st.outputs:
            if o in written:
                raise ValueError(f"{o} is written by both {written[o]} and {st.name}")
            written[o] = st.name


def stage_fingerprints(stages: list[Stage]) -> dict[str, str]:
    ctx = Context(run=None, executor=None, stages=stages)  # type: ignore[arg-type]  # the graph only
    fps: dict[str, str] = {}
    for st in stages:
        if isinstance(st, ShardStage):
            fps[st.name] = settings_fingerprint(st)
        else:
            spec = {
                "stage": st.name,
                "v": STAGE_VERSION,
                "settings": st.settings,
                "after": [fps[a.name] for a in ctx.upstream(st)],
            }
            if st.version != 1:  # a stage's own output-format version
                spec["stage_v"] = st.version
            fps[st.name] = fingerprint(spec)
    return fps


def _context(
    stages: list[Stage], run: RunDir, shards: list[ShardRef], executor: Executor, threads: int | None
) -> Context:
    check_graph(stages)
    return Context(
        run=run,
        executor=executor,
        stages=stages,
        shards=shards,
        fingerprints=stage_fingerprints(stages),
        threads=threads,
    )


def plan(
    stages: list[Stage], run: RunDir, shards: list[ShardRef], executor: Executor | None = None
) -> Context:
    """The context of a run as it stands on disk: stage fingerprints, and each shard stage's per-shard
    fingerprints given its upstream stages' current outputs (what `jade status` and `--stages` rely on)."""
    ctx = _context(stages, run, shards, executor or LocalExecutor(), None)
    for st in stages:
        if isinstance(st, ShardStage):
            ctx.shard_fps[st.name] = {k: v for k, v in shard_fingerprints(ctx, st, shards).items() if v}
    return ctx


def execute(
    stages: list[Stage],
    run: RunDir,
    shards: list[ShardRef],
    executor: Executor,
    only: list[str] | None = None,
    threads: int | None = None,
) -> dict[str, dict]:
    """Run ``stages`` (all, or the ones named in ``only``) in order; returns each stage's summary. A shard stage
    with failed shards is incomplete: its summary lists them under ``failed_shards``."""
    ctx = _context(stages, run, shards, executor, threads)
    summaries: dict[str, dict] = {}
    for st in stages:
        if only and st.name not in only:
            if isinstance(st, ShardStage):  # not run now, but later stages read its current outputs
                ctx.shard_fps[st.name] = {k: v for k, v in shard_fingerprints(ctx, st, shards).items() if v}
            continue
        if isinstance(st, ShardStage):
            summaries[st.name] = _shard_stage(ctx, st)
        elif isinstance(st, WholeStage):
            summaries[st.name] = _whole_stage(ctx, st)
        else:
            raise TypeError(f"stage {st.name}: neither a WholeStage nor a ShardStage")
    return summaries


def _shard_stage(ctx: Context, st: ShardStage) -> dict:
    t0 = time.time()
    summary = map_stage(ctx, st)
    published = sorted(ctx.shard_fps[st.name].keys() - set(summary.get("failed_shards", {})))
    stats = st.finish(ctx, published)
    if stats is not None:
        summary["stats"] = stats
    summary["seconds"] = round(time.time() - t0, 1)
    complete = not summary.get("failed_shards")
    summary["skipped"] = complete and summary["shards_run"] == 0  # nothing was left to do
    ctx.run.mark_done(
        st.name, ctx.fp(st.name), {**summary, "complete": complete, "shard_fps": ctx.shard_fps[st.name]}
    )
    done = "done" if complete else f"{len(summary['failed_shards'])} shard(s) failed or left out"
    log.info(
        "%s: %s (%d shards, %d run) in %.1fs",
        st.name,
        done,
        summary["shards"],
        summary["shards_run"],
        summary["seconds"],
    )
    return summary


def _whole_stage(ctx: Context, st: WholeStage) -> dict:
    fp = ctx.fp(st.name)
    if rec := ctx.run.done(st.name, fp):
        log.info("%s: up to date, skipped", st.name)
        return {**rec, "skipped": True}
    log.info("%s: running", st.name)
    t0 = time.time()
    try:
        summary = st.run(ctx)
    except BaseException as e:
        log.warning("%s: stopped after %.0fs, not done: %s", st.name, time.time() - t0, stop_reason(e))
        raise
    summary["seconds"] = round(time.time() - t0, 1)
    ctx.run.mark_done(st.name, fp, summary)
    log.info("%s: done in %.1fs", st.name, summary["seconds"])
    return summary
