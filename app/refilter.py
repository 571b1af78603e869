"""`jade refilter DIR --set filter.KEY=VALUE ...`: re-apply a changed filter rule to a finished run.

The run's own resolved manifest (run.json) plus the new `filter.*` settings give new fingerprints; the filter
stage then re-applies the rule to the stored answers of both models (`_work/filter/answers/`) and publish
rewrites dataset/, rejected/, stats.json and the card. Neither model is loaded: a shard whose filter answers
are missing fails with an error saying so, never a reason to run the model. Because the same runner records
the new fingerprints in run.json and _state/, `jade status` shows the run done, and a later `jade run` with
the same settings skips everything.
"""

from __future__ import annotations

import copy

from jade.app.runner import STAGES, describe_run, stage_fingerprints
from jade.formats.samples import ShardRef
from jade.pipeline import runner
from jade.pipeline.config import Manifest, ManifestError, apply_overrides
from jade.pipeline.executor import LocalExecutor
from jade.pipeline.rundir import RunDir, RunLock, atomic_write_json, read_json
from jade.typed import build

RULE_KEYS = ("normalization", "match", "min_score", "presupposition")


class RefilterError(RuntimeError):
    """The run cannot be refiltered (the message says why and what to do)."""


def refilter(run_dir: str, sets: list[str]) -> dict:
    """Re-apply the filter rule with `sets` (``filter.min_score=0.3``) and republish; returns the summaries."""
    run = RunDir(run_dir)
    meta = read_json(run.run_json)
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
    if not runner.plan(STAGES, old, run, found).shard_fps["generate"].keys() >= {s.shard_id for s in found}:
        raise RefilterError(f"{run_dir}: generate has not finished; finish the run with `jade run` first")
    new = build(Manifest, apply_overrides(copy.deepcopy(meta["manifest"]), sets), "")
    overrides = [o for o in meta.get("overrides", []) if o.split("=", 1)[0] not in keys] + list(sets)
    with RunLock(run):
        atomic_write_json(
            run.run_json,
            describe_run(new, stage_fingerprints(new), meta.get("manifest_source", ""), overrides, found),
        )
        summaries = runner.execute(
            STAGES, new, run, found, LocalExecutor(), ["filter", "publish"], allow_models=False
        )
    failed = summaries["filter"].get("failed_shards")
    if failed:
        raise RefilterError(
            f"{run_dir}: " + "; ".join(f"{s}: {f['error']}" for s, f in sorted(failed.items()))
        )
    return summaries
