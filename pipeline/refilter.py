"""`jade refilter DIR --set filter.KEY=VALUE ...`: re-apply a changed filter rule to a finished run.

The run's own resolved manifest (run.json) plus the new `filter.*` settings give new stage fingerprints;
the filter stage then re-applies the rule to the stored answers of both models (`_work/filter/answers/`)
and publish rewrites dataset/, rejected/, stats.json and the card. Neither model is loaded: a shard whose
filter answers are missing is an error, not a reason to run the model. Because the same runner records the
new fingerprints in run.json and _state/, `jade status` shows the run done, and a later `jade run` with the
same settings skips everything.
"""

from __future__ import annotations

import copy

from jade.pipeline.config import Manifest, ManifestError, apply_overrides, build
from jade.pipeline.executor import LocalExecutor
from jade.pipeline.rundir import RunDir, read_json
from jade.pipeline.runner import STAGES, execute, stage_fingerprints
from jade.stages.filter import answers_from_outputs, model_fingerprint, read_answers, write_answers

RULE_KEYS = ("normalization", "match", "min_score")
UPSTREAM = ("ingest", "finetune_generator", "finetune_filter", "generate")
STAGES_BY_NAME = {st.name: st for st in STAGES}


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
    old_fps = stage_fingerprints(old)
    recorded = meta.get("stage_fingerprints", {})
    if any(old_fps[s] != recorded.get(s) for s in (*UPSTREAM, "filter")):
        raise RefilterError(
            f"{run_dir}: run.json was written by another version of the stages; `jade run` it"
        )
    if not run.done("generate", old_fps["generate"]):
        raise RefilterError(f"{run_dir}: generate has not finished; finish the run with `jade run` first")
    new = build(Manifest, apply_overrides(copy.deepcopy(meta["manifest"]), sets), "")
    fps = stage_fingerprints(new)
    model_fp = model_fingerprint(fps, STAGES_BY_NAME["filter"].settings(new))
    for shard in read_json(run.work("ingest") / "shards.json") or []:
        sid = shard["shard_id"]
        if read_answers(run, sid, model_fp) is not None:
            continue
        if not run.done("filter", old_fps["filter"], sid):
            raise RefilterError(
                f"{run_dir}: the filter model has not answered shard {sid}; `jade run` it first"
            )
        write_answers(
            run, sid, model_fp, answers_from_outputs(run, sid)
        )  # a run filtered before answers were kept
    overrides = [o for o in meta.get("overrides", []) if o.split("=", 1)[0] not in keys] + list(sets)
    return execute(
        new, run, meta.get("manifest_source", ""), overrides, ["filter", "publish"], LocalExecutor()
    )
