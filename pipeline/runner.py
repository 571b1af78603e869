"""Runs a manifest's stages in data-flow order, skipping any whose completion record matches this run.

A stage's fingerprint is the hash of its own settings and its upstream stages' fingerprints, so changing a
setting re-runs that stage and every stage after it, and nothing else.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import fsspec

from jade.formats import shards
from jade.pipeline.config import Manifest, ManifestError, load_manifest
from jade.pipeline.rundir import RunDir, atomic_write_json, fingerprint, read_json
from jade.pipeline.stage import Context
from jade.stages.filter import Filter
from jade.stages.finetune import Finetune
from jade.stages.generate import Generate
from jade.stages.ingest import Ingest
from jade.stages.publish import Publish

log = logging.getLogger("jade")
STAGES = [Ingest(), Finetune("generator"), Finetune("filter"), Generate(), Filter(), Publish()]
STAGE_VERSION = 1  # bump when a stage's output format changes, to invalidate old records


def stage_fingerprints(m: Manifest) -> dict[str, str]:
    fps: dict[str, str] = {}
    for st in STAGES:
        spec = {
            "stage": st.name,
            "v": STAGE_VERSION,
            "settings": st.settings(m),
            "after": [fps[a] for a in st.after],
        }
        # A stage's own output-format version: bumping it re-runs that stage and the later ones only.
        if getattr(st, "version", None):
            spec["stage_v"] = st.version
        fps[st.name] = fingerprint(spec)
    return fps


def check_paths(m: Manifest) -> None:
    """Every file and folder the manifest names exists (an error names the key and the path)."""

    def need(path: str | None, key: str) -> None:
        if not path:
            raise ManifestError(f"{key}: required")
        fs, p = fsspec.core.url_to_fs(path)
        if not fs.exists(p):
            raise ManifestError(f"{key}: no such file or folder: {path}")

    for role in ("generator", "filter"):
        for src in getattr(m.models, role).data:
            if getattr(m.sources, src) is None:
                raise ManifestError(f"models.{role}.data names {src!r} but sources.{src} is missing")
    if m.sources.vg:
        need(m.sources.vg.image_data, "sources.vg.image_data")
        need(m.sources.vg.regions, "sources.vg.regions")
        if m.sources.vg.qas:
            need(m.sources.vg.qas, "sources.vg.qas")
        for i, d in enumerate(m.sources.vg.images):
            need(d, f"sources.vg.images[{i}]")
    if m.sources.gqa:
        need(m.sources.gqa.images, "sources.gqa.images")
        if not m.sources.gqa.questions:
            raise ManifestError("sources.gqa.questions: required")
    if m.sources.vqa:
        for k in ("questions", "annotations", "images"):
            need(getattr(m.sources.vqa, k), f"sources.vqa.{k}")
    for role in ("generator", "filter"):
        base = getattr(m.models, role).base
        if base and (base.startswith((".", "/", "~")) or os.path.sep in base and Path(base).exists()):
            need(base, f"models.{role}.base")
    try:
        shards.list_shards(m.sources.images.format, m.sources.images.urls)
    except (FileNotFoundError, ValueError) as e:
        raise ManifestError(f"sources.images.urls: {e}") from None


def ensure_world(m: Manifest, run: RunDir) -> None:
    from jade.sampleworld import WorldConfig, write_world

    sw = dataclasses.asdict(m.sample_world)
    sw["seed"] = m.seed if sw["seed"] is None else sw["seed"]
    cfg = WorldConfig(**sw)
    meta = read_json(run.world / "world.json") or {}
    if meta.get("config") == dataclasses.asdict(cfg):
        return
    log.info("sample world: writing %s", run.world)
    write_world(run.world, cfg)


def run_manifest(
    manifest: str,
    out: str | None = None,
    overrides: list[str] | None = None,
    only: list[str] | None = None,
    executor=None,
) -> dict:
    names = [s.name for s in STAGES]
    for name in only or []:
        if name not in names:
            raise ManifestError(f"--stages: unknown stage {name!r} (stages: {', '.join(names)})")
    raw_name = Path(manifest).stem if manifest.endswith((".yaml", ".yml")) else manifest
    try:
        run = RunDir(out or f"runs/{raw_name}")
    except ValueError as e:
        raise ManifestError(f"--out: {e}") from None
    env = dict(os.environ)
    env.setdefault("SAMPLE_WORLD", str(run.world))
    m = load_manifest(manifest, overrides, env)
    if m.sample_world is not None:
        ensure_world(m, run)
    check_paths(m)
    return execute(m, run, manifest, overrides or [], only, executor)


def execute(m: Manifest, run: RunDir, source: str, overrides: list[str], only: list[str] | None = None,
            executor=None) -> dict:  # fmt: skip
    """Record the run (run.json) and run its stages in order, skipping those already done."""
    fps = stage_fingerprints(m)
    run.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.run_json, describe_run(m, fps, source, overrides))
    if executor is None:
        from jade.pipeline.executor import RayExecutor

        executor = RayExecutor()
    ctx = Context(manifest=m, run=run, executor=executor, fingerprints=fps)
    summaries = {}
    for st in STAGES:
        if only and st.name not in only:
            continue
        if rec := run.done(st.name, fps[st.name]):
            log.info("%s: up to date, skipped", st.name)
            summaries[st.name] = {**rec, "skipped": True}
            continue
        t0 = time.time()
        log.info("%s: running", st.name)
        summary = st.run(ctx)
        summary["seconds"] = round(time.time() - t0, 1)
        summaries[st.name] = summary
        if summary.get("failed_shards"):  # not complete: a re-run retries the failed shards
            log.error("%s: %d shard(s) failed or left out after %.1fs; the other shards are complete", st.name,
                      len(summary["failed_shards"]), summary["seconds"])  # fmt: skip
            continue
        run.mark_done(st.name, fps[st.name], summary)
        log.info("%s: done in %.1fs", st.name, summary["seconds"])
    return summaries


def describe_run(m: Manifest, fps: dict, manifest: str, overrides: list[str]) -> dict:
    """run.json: everything needed to reproduce the run."""
    pkgs = {}
    for p in ("torch", "transformers", "ray", "datasets", "pyarrow", "pillow", "fsspec", "jade-factory"):
        try:
            pkgs[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pkgs[p] = None
    try:
        root = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "manifest": m.to_dict(), "manifest_source": manifest, "overrides": overrides,
        "config_fingerprint": fingerprint(m.to_dict()), "stage_fingerprints": fps, "seed": m.seed,
        "packages": pkgs, "git_commit": commit, "python": sys.version.split()[0], "platform": platform.platform(),
        "command": sys.argv,
    }  # fmt: skip
