"""`jade status DIR [--shards]`: per-stage (in data-flow order) and per-shard progress of a run directory, read
from its records, so it works while a run is going on, from another shell. A shard stage's line names the
shards that failed (with their errors) and, for publish, the shards in which no image was usable; with
`--shards`, every finished shard's counts, failure reasons (by kind) and converted source modes."""

from __future__ import annotations

import copy
import time

from jade.app.manifest import Manifest
from jade.app.runner import build_stages
from jade.formats.samples import ShardRef
from jade.pipeline.progress import fmt_eta, stage_progress
from jade.pipeline.rundir import RunDir
from jade.pipeline.runlock import holder as lock_holder
from jade.pipeline.runner import plan
from jade.pipeline.stage import ShardStage
from jade.stages.publish import Publish
from jade.typed import build


def _counts(rec: dict) -> str:
    c = rec.get("counts", {})
    parts = [f"{k}={v}" for k, v in c.items() if isinstance(v, int)]
    for k in ("failure_reasons", "converted_from", "rejected_by_reason"):
        if c.get(k):
            parts.append(f"{k}: " + ", ".join(f"{r} {n}" for r, n in sorted(c[k].items())))
    return "; ".join(parts)


def status_lines(run_dir: str, shards: bool = False) -> list[str]:
    run = RunDir(run_dir)
    meta = run.read_json("run.json")
    if not meta:
        raise FileNotFoundError(f"{run_dir} is not a run directory (no run.json)")
    m = build(Manifest, copy.deepcopy(meta["manifest"]), "")
    found = [ShardRef(**s) for s in meta.get("shards", [])]
    stages = build_stages(m)
    ctx = plan(stages, run, found)
    holder = lock_holder(run)
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0))) if holder else ""
    lines = [
        f"run {run.url}: "
        + (
            f"held by host {holder.get('host')} pid {holder.get('pid')} since {since}"
            if holder
            else "not running"
        )
    ]
    for st in stages:
        fp = ctx.fp(st.name)
        if not isinstance(st, ShardStage):
            lines.append(f"{st.name:20s} {'done' if run.done(st.name, fp) else 'pending'}")
            continue
        fps = ctx.shard_fps[st.name]
        recs = {s: r for s, r in run.done_many(st.name, fps).items() if r}
        failed = {s: r for s, r in run.failed(st.name).items() if r.get("fingerprint") == fps.get(s)}
        total = len(found)
        state = "done" if len(recs) == total and not failed else ("partial" if recs or failed else "pending")
        line = f"{st.name:20s} {state:8s} {len(recs)}/{total} shards"
        prog = stage_progress(run, st.name, fp, fps)
        if prog and state != "done":
            line += f", {prog['images_per_s']:.1f} images/s, {fmt_eta(prog['eta_s'])}"
        if failed:
            line += ", failed: " + ", ".join(sorted(failed))
        empty = sorted(s for s, r in recs.items() if st.name == Publish.name and r.get("images") == 0)
        if empty:
            line += ", no usable image in: " + ", ".join(empty)
        lines.append(line)
        lines += [f"    {s} failed: {r.get('error')}" for s, r in sorted(failed.items())]
        if shards:
            lines += [
                f"    {s}: {_counts(r)}" + (" (no usable image: no file)" if s in empty else "")
                for s, r in sorted(recs.items())
            ]
    return lines
