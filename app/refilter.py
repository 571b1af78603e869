"""`jade refilter DIR --set filter.KEY=VALUE ...`: re-apply a changed filter rule to a finished run.

The run's own resolved manifest (run.json) plus the new `filter.*` settings give new fingerprints; it runs the
stages `filter` (the rule, over the stored answers of both models: the `answer` stage's) and `publish`, which
rewrites dataset/, rejected/, stats.json and the card. Neither model is loaded: the `answer` stage is not
run, and a run whose answers are not all stored is refused, saying so. Because the same runner records
the new fingerprints in run.json and _state/, `jade status` shows the run done, and a later `jade run` with
the same settings skips everything.
"""

from __future__ import annotations

import copy

from jade.app.manifest import Manifest, ManifestError
from jade.app.runner import build_stages, describe_run, stage_fingerprints
from jade.formats.samples import ShardRef
from jade.pipeline import runner
from jade.pipeline.config import apply_overrides
from jade.pipeline.executor import LocalExecutor
from jade.pipeline.rundir import RunDir, RunLock
from jade.stages.answers import Answers
from jade.stages.filter import Filter
from jade.stages.publish import Publish
from jade.typed import build

RULE_KEYS = ("normalization", "match", "min_score", "presupposition")


class RefilterError(RuntimeError):
    """The run cannot be refiltered (the message says why and what to do)."""


def refilter(run_dir: str, sets: list[str]) -> dict:
    """Re-apply the filter rule with `sets` (``filter.min_score=0.3``) and republish; returns the summaries."""
    run = RunDir(run_dir)
    meta = run.read_json("run.json")
    if not meta:
        raise RefilterError(f"{run_dir} is not a run directory (no run.json)")
    keys = []
    for s in sets:
        key = s.split("=", 1)[0]
        if "=" not in s or key.split(".")[0] != "filter" or key.split(".", 1)[-1] not in RULE_KEYS:
            raise ManifestError(f"--set {s!r}: refilter changes only filter.{{{','.join(RULE_KEYS)}}}")
        keys.append(key)
    old = build(Manifest, copy.deepcopy(meta["manifest"]), "")
    if stage_fingerprints(old) != meta.get("stage_fingerprints"):
        raise RefilterError(
            f"{run_dir}: run.json was written by another version of the stages; `jade run` it"
        )
    found = [ShardRef(**s) for s in meta.get("shards", [])]
    fps = runner.plan(build_stages(old), run, found).shard_fps[Answers.name]
    unanswered = [
        s.shard_id for s in found if not run.done(Answers.name, fps.get(s.shard_id, ""), s.shard_id)
    ]
    if unanswered:
        raise RefilterError(
            f"{run_dir}: the filter model has not answered shard(s) {', '.join(unanswered)}; finish the run "
            "with `jade run` first"
        )
    new = build(Manifest, apply_overrides(copy.deepcopy(meta["manifest"]), sets), "")
    overrides = [o for o in meta.get("overrides", []) if o.split("=", 1)[0] not in keys] + list(sets)
    with RunLock(run):
        run.write_json(
            "run.json",
            describe_run(new, stage_fingerprints(new), meta.get("manifest_source", ""), overrides, found),
        )
        summaries = runner.execute(
            build_stages(new), run, found, LocalExecutor(), [Filter.name, Publish.name]
        )
    failed = summaries[Filter.name].get("failed_shards")
    if failed:
        raise RefilterError(
            f"{run_dir}: " + "; ".join(f"{s}: {f['error']}" for s, f in sorted(failed.items()))
        )
    return summaries
