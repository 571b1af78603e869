"""The factory as an application: its stages in data-flow order, and `run_manifest`, which `jade run` and
`make generate` call: load and check the manifest (every path and glob before any work), write the sample
world when the manifest has one, lock the run directory, record the run (run.json) and execute the stages."""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import fsspec

from jade.formats import shards
from jade.formats.samples import ShardRef
from jade.pipeline import runner
from jade.pipeline.config import Manifest, ManifestError, load_manifest
from jade.pipeline.executor import Executor, RayExecutor
from jade.pipeline.logs import run_log
from jade.pipeline.rundir import RunDir, RunLock, atomic_write_json, fingerprint, read_json
from jade.stages.dedupe import Dedupe
from jade.stages.examples import Examples
from jade.stages.filter import Filter
from jade.stages.finetune import Finetune
from jade.stages.generate import Generate
from jade.stages.ingest import Ingest
from jade.stages.publish import Publish

log = logging.getLogger("jade")
STAGES = [
    Examples(),
    Finetune("generator"),
    Finetune("filter"),
    Ingest(),
    Dedupe(),
    Generate(),
    Filter(),
    Publish(),
]
STAGE_NAMES = [st.name for st in STAGES]


def stage_fingerprints(m: Manifest) -> dict[str, str]:
    return runner.stage_fingerprints(STAGES, m)


def manifest_env(run: RunDir) -> dict[str, str]:
    """The environment a manifest's ${VAR}s read: the process's, plus ${SAMPLE_WORLD} (the run's world)
    unless set (``load_manifest`` adds ${JADE_BASES})."""
    env = dict(os.environ)
    env.setdefault("SAMPLE_WORLD", str(run.world))
    return env


def check_paths(m: Manifest, later: str | None = None) -> list[ShardRef]:
    """Every file and folder the manifest names exists (an error names the key and the path); returns the
    image shards. Paths under ``later`` (the sample world, not written yet) are left for a second call."""

    def need(path: str | None, key: str) -> None:
        if not path:
            raise ManifestError(f"{key}: required")
        if later and str(path).startswith(later):
            return
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
    urls = m.sources.images.urls
    deferred = [u for u in urls if later and str(u).startswith(later)]
    checked = [u for u in urls if u not in deferred]  # the others are checked now, world or not
    try:
        found = shards.list_shards(m.sources.images.format, checked) if checked else []
    except (FileNotFoundError, ValueError) as e:
        raise ManifestError(f"sources.images.urls: {e}") from None
    if deferred:
        return []  # the shard list comes from the second call, once the world is written
    if not found:
        raise ManifestError(f"sources.images.urls: no shard matches {urls}")
    return found


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
    executor: Executor | None = None,
) -> dict:
    for name in only or []:
        if name not in STAGE_NAMES:
            raise ManifestError(f"--stages: unknown stage {name!r} (stages: {', '.join(STAGE_NAMES)})")
    raw_name = Path(manifest).stem if manifest.endswith((".yaml", ".yml")) else manifest
    try:
        run = RunDir(out or f"runs/{raw_name}")
    except ValueError as e:
        raise ManifestError(f"--out: {e}") from None
    m = load_manifest(manifest, overrides, manifest_env(run))
    check_paths(m, later=str(run.world) if m.sample_world is not None else None)
    with RunLock(run):
        handler = run_log(run.root / "_logs" / "run.log")  # everything, Ray's messages included
        try:
            if m.sample_world is not None:
                ensure_world(m, run)
            found = check_paths(m)
            return execute(m, run, found, manifest, overrides or [], only, executor)
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()


def execute(
    m: Manifest,
    run: RunDir,
    found: list[ShardRef],
    source: str,
    overrides: list[str],
    only: list[str] | None = None,
    executor: Executor | None = None,
) -> dict:
    """Record the run (run.json) and run its stages in order, skipping what is done."""
    run.root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run.run_json, describe_run(m, stage_fingerprints(m), source, overrides, found))
    return runner.execute(STAGES, m, run, found, executor or RayExecutor(), only)


def describe_run(m: Manifest, fps: dict, manifest: str, overrides: list[str], found: list[ShardRef]) -> dict:
    """run.json: everything needed to reproduce the run."""
    pkgs = {}
    for p in ("torch", "transformers", "ray", "datasets", "pyarrow", "pillow", "fsspec", "jade-factory"):
        try:
            pkgs[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pkgs[p] = None
    try:
        root = Path(__file__).resolve().parent.parent
        commit = (
            subprocess.run(
                ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "manifest": m.to_dict(),
        "manifest_source": manifest,
        "overrides": overrides,
        "config_fingerprint": fingerprint(m.to_dict()),
        "stage_fingerprints": fps,
        "seed": m.seed,
        "shards": [dataclasses.asdict(s) for s in found],
        "packages": pkgs,
        "git_commit": commit,
        "code": str(Path(__file__).resolve().parent.parent),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": sys.argv,
    }
