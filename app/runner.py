"""The factory as an application: its stages in data-flow order, assembled from a manifest (`build_stages`:
each stage gets its settings, its resources and the outputs of the stages it reads), and `run_manifest`, which
`jade run` and `make generate` call: load and check the manifest (every path and glob before any work), write
the sample world when the manifest has one, lock the run directory, record the run (run.json) and execute the
stages."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import fsspec

from jade.app import plan
from jade.app.manifest import ROLES, Manifest, ManifestError, load_manifest
from jade.formats import shards
from jade.formats.samples import ShardRef
from jade.models.tasks import QUESTION_TYPES
from jade.pipeline import runner
from jade.pipeline.executor import Executor, RayExecutor
from jade.pipeline.logs import run_log
from jade.pipeline.rundir import RunDir, RunLock, fingerprint, plain
from jade.pipeline.stage import Stage
from jade.reports.card import CardInfo
from jade.sampleworld import WORLD_FOLDER
from jade.stages.answers import Answers, AnswerSettings
from jade.stages.dedupe import Dedupe, DedupeSettings
from jade.stages.examples import REGION_TASK, Examples, ExamplesSettings
from jade.stages.filter import Filter
from jade.stages.finetune import Finetune, FinetuneSettings
from jade.stages.generate import Generate, GenerateSettings
from jade.stages.ingest import Ingest, IngestSettings
from jade.stages.publish import Publish, PublishSettings

__all__ = [
    "STAGE_NAMES",
    "build_stages",
    "card_info",
    "LOG",
    "check_paths",
    "close_run_log",
    "describe_run",
    "ensure_world",
    "execute",
    "manifest_env",
    "open_run_log",
    "run_manifest",
    "stage_fingerprints",
]

log = logging.getLogger("jade")
LOG = "_logs/run.log"  # the run's log, relative to the run directory


# the source files only region-conditioned questions read: outside the examples' settings (and fingerprint)
# unless the generator learns them
REGION_SOURCE_KEYS = {"vg": ("qa_regions",), "gqa": ("scene_graphs",)}


def model_specs(m: Manifest) -> dict:
    """Each role's spec as it trains: under `generate.condition: region` the generator also learns the
    region_question task (added when the manifest does not list it)."""
    specs = {r: getattr(m.models, r) for r in ROLES}
    g = specs["generator"]
    if m.generate.condition == "region" and REGION_TASK not in g.tasks:
        specs["generator"] = dataclasses.replace(g, tasks=[*g.tasks, REGION_TASK])
    return specs


def example_sources(m: Manifest, specs: dict) -> dict:
    """The annotation sources the examples read; the region-only files only when a role learns region_question."""
    regional = any(REGION_TASK in s.tasks for s in specs.values())
    out = {}
    for k in ("vg", "gqa", "vqa"):
        if (v := getattr(m.sources, k)) is None:
            continue
        if not regional:
            v = dataclasses.replace(v, **{f: getattr(type(v)(), f) for f in REGION_SOURCE_KEYS.get(k, ())})
        out[k] = plain(v)
    return out


def build_stages(m: Manifest) -> list[Stage]:
    """The factory's stages for manifest ``m``, in data-flow order, each handed what it reads."""
    res, threads, trust = m.resources, m.resources.threads, m.models.trust_remote_code
    specs = model_specs(m)
    sources = example_sources(m, specs)
    roles = {r: {"tasks": specs[r].tasks, "data": specs[r].data} for r in ROLES}
    world = m.world()
    examples = Examples(
        ExamplesSettings(sources, roles, dataclasses.asdict(world) if world else None), res.ingest
    )
    finetune = {
        r: Finetune(
            r,
            FinetuneSettings(specs[r], m.models.family, m.seed),
            Examples.output(r),
            res.train,
            threads,
            trust,
        )
        for r in ROLES
    }
    generator, filter_model = (Finetune.checkpoint(r) for r in ROLES)
    g = m.generate
    return [
        examples,
        *finetune.values(),
        Ingest(IngestSettings(m.ingest.min_image_size), res.ingest),
        # its digests and drop lists on the ingest pool (every CPU the cluster gives it): shards are independent
        Dedupe(DedupeSettings(m.ingest.dedupe), Ingest.SAMPLES, res.ingest),
        Generate(
            GenerateSettings(g, m.seed),
            Dedupe.SAMPLES,
            generator,
            res.generate,
            res.generate.decode_rows,
            trust,
        ),
        Answers(
            AnswerSettings(g.backend, g.max_new_tokens.answer),
            Generate.OUTPUT,
            filter_model,
            res.filter,
            res.filter.decode_rows,
            trust,
        ),
        Filter(m.filter, Generate.OUTPUT, Answers.OUTPUT, res.ingest),
        Publish(
            PublishSettings(
                m.publish.embed_images, m.publish.rows_per_file, m.seed, g.condition == "region"
            ),
            samples=Dedupe.SAMPLES,
            kept=Filter.KEPT,
            rejected=Filter.REJECTED,
            models={r: Finetune.checkpoint(r) for r in ROLES},
            resources=res.ingest,
            card=card_info(m),
        ),
    ]


def card_info(m: Manifest) -> CardInfo:
    """What the dataset card says of the run."""
    g, f = m.generate, m.filter
    questions = {t: g.questions[t] for t in QUESTION_TYPES if t in g.questions}
    return CardInfo(
        name=m.name,
        models={r: getattr(m.models, r).base or f"from scratch ({m.models.family})" for r in ROLES},
        settings=[
            f"seed {m.seed}; backend `{g.backend}`; top-K {g.top_k}, temperature {g.temperature}",
            f"dense-caption samples per image: {g.captions} (near-duplicate boxes above IoU {g.box_dedup_iou} "
            "removed)",
            (
                f"question samples per image by type: {json.dumps(questions)}"
                if g.condition == "type"
                else "questions asked per kept dense-caption region (the prompt carries its box and caption), "
                f"samples by JADE type: {json.dumps(g.region_questions)}"
            ),
            f"filter: normalization `{f.normalization}`, match `{f.match}`, min score {f.min_score}",
        ],
    )


def stage_fingerprints(m: Manifest) -> dict[str, str]:
    return runner.stage_fingerprints(build_stages(m))


STAGE_NAMES = [st.name for st in build_stages(Manifest())]


def manifest_env(run: RunDir) -> dict[str, str]:
    """The environment a manifest's ${VAR}s read: the process's, plus ${SAMPLE_WORLD} (the run's world)
    unless set (``load_manifest`` adds ${JADE_BASES})."""
    env = dict(os.environ)
    env.setdefault("SAMPLE_WORLD", run.uri(WORLD_FOLDER))
    return env


def check_paths(m: Manifest, later: str | None = None) -> list[ShardRef]:
    """Every file and folder the manifest names exists (an error names the key and the path); returns the
    image shards. Paths under ``later`` (the sample world, not written yet) are left for a second call."""
    m.check_sources()

    def need(path: str | None, key: str) -> None:
        if not path:
            raise ManifestError(f"{key}: required")
        if later and str(path).startswith(later):
            return
        fs, p = fsspec.core.url_to_fs(path)
        if not fs.exists(p):
            raise ManifestError(f"{key}: no such file or folder: {path}")

    if m.sources.vg:
        need(m.sources.vg.image_data, "sources.vg.image_data")
        need(m.sources.vg.regions, "sources.vg.regions")
        if m.sources.vg.qas:
            need(m.sources.vg.qas, "sources.vg.qas")
        if m.sources.vg.qa_regions:
            need(m.sources.vg.qa_regions, "sources.vg.qa_regions")
        for i, d in enumerate(m.sources.vg.images):
            need(d, f"sources.vg.images[{i}]")
    if m.sources.gqa:
        need(m.sources.gqa.images, "sources.gqa.images")
        if not m.sources.gqa.questions:
            raise ManifestError("sources.gqa.questions: required")
        for i, f in enumerate(m.sources.gqa.scene_graphs):
            need(f, f"sources.gqa.scene_graphs[{i}]")
    if m.sources.vqa:
        for k in ("questions", "annotations", "images"):
            need(getattr(m.sources.vqa, k), f"sources.vqa.{k}")
    for role in ROLES:
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
    """The sample world at <run>/world, unless it is there with the same settings: written locally (in place,
    or in the local cache when the run directory is on an object store, then uploaded with world.json last)."""
    from jade.sampleworld import write_world

    cfg = m.world()
    meta = run.read_json(f"{WORLD_FOLDER}/world.json") or {}
    if meta.get("config") == dataclasses.asdict(cfg):
        return
    log.info("sample world: writing %s", run.uri(WORLD_FOLDER))
    folder = run.scratch / WORLD_FOLDER
    write_world(folder, cfg)
    run.put_dir(folder, WORLD_FOLDER, last="world.json")


def run_manifest(
    manifest: str,
    out: str | None = None,
    overrides: list[str] | None = None,
    only: list[str] | None = None,
    executor: Executor | None = None,
    gpu_memory: float | None = None,
) -> dict:
    """``gpu_memory``: GiB to check the fine-tuning memory plan against (None: the GPUs found, `app.plan`)."""
    for name in only or []:
        if name not in STAGE_NAMES:
            raise ManifestError(f"--stages: unknown stage {name!r} (stages: {', '.join(STAGE_NAMES)})")
    raw_name = Path(manifest).stem if manifest.endswith((".yaml", ".yml")) else manifest
    try:
        run = RunDir(out or f"runs/{raw_name}")
    except (ValueError, ImportError) as e:  # an unknown protocol, or its fsspec backend not installed
        raise ManifestError(f"--out: {e}") from None
    m = load_manifest(manifest, overrides, manifest_env(run))
    check_paths(m, later=run.uri(WORLD_FOLDER) if m.sample_world is not None else None)
    with RunLock(run):
        handler = open_run_log(run)  # everything, Ray's messages included
        log.info("jade run: started in %s (host %s, pid %d)", run.url, socket.gethostname(), os.getpid())
        try:
            # the memory plan: refuse before any work when a role to fine-tune does not fit the GPUs (app.plan)
            plan.check_run(m, plan.roles_to_train(run, only, stage_fingerprints(m)), executor, gpu_memory)
            if m.sample_world is not None:
                ensure_world(m, run)
            found = check_paths(m)
            return execute(m, run, found, manifest, overrides or [], only, executor)
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()
            close_run_log(run)


def open_run_log(run: RunDir) -> logging.Handler:
    """The run's log, `LOG` (appended to by every run of the directory). On an object store it is written
    locally (in the local cache) and uploaded when the run ends (`close_run_log`)."""
    local = run.scratch / LOG
    if not run.local:
        local.parent.mkdir(parents=True, exist_ok=True)
        stored = run.read_bytes(LOG) if run.exists(LOG) else b""  # the earlier runs' lines
        if not (local.exists() and local.read_bytes().startswith(stored)):  # else: local has more (a kill)
            local.write_bytes(stored)
    return run_log(local)


def close_run_log(run: RunDir) -> None:
    if not run.local:
        run.write_bytes(LOG, (run.scratch / LOG).read_bytes())


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
    stages = build_stages(m)
    fps = runner.stage_fingerprints(stages)
    run.write_json("run.json", describe_run(m, fps, source, overrides, found))
    return runner.execute(stages, run, found, executor or RayExecutor(), only, m.resources.threads)


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
