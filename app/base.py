"""`jade base` (`make base`): pretrain the sample world's tiny base with the bundled pretrainer, on an unlimited
stream of freshly drawn scenes (the world source: never an image of the world's datasets), and ship it as a
`save_pretrained` directory with a model card.

The recipe is a YAML file (`manifests/bases/<name>.yaml`): a name, a seed, and a `pretrain:` block (the pretrainer's
settings, `models.pretrain.config.PretrainConfig`, with `source: world`). The export is what the sample
manifest fine-tunes both of its models from (`models.<role>.base: ${JADE_BASES}/<name>`): weights
(safetensors), processor and tokenizer, config, `jade_model.json` (the attention rule, the recipe, the
fingerprint of the weights, the probe scores) and README.md, the card.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import platform
import time
from pathlib import Path

import yaml

from jade.app.manifest import BASES_DIR, MANIFEST_DIR
from jade.app.world_source import WorldSource
from jade.models import factory
from jade.models.pretrain.config import PretrainConfig, WorldSpec
from jade.models.pretrain.loop import PretrainJob, load_checkpoint, pretrain_loop
from jade.pipeline.config import apply_overrides
from jade.pipeline.executor import Executor
from jade.pipeline.resources import TrainResources
from jade.pipeline.rundir import atomic_dir, atomic_write_json, read_json
from jade.typed import ConfigError, build

log = logging.getLogger("jade")
RECIPE = MANIFEST_DIR / "bases" / "sampleworld-tiny.yaml"


def load_recipe(path: str | Path = RECIPE, sets: list[str] | None = None) -> tuple[dict, PretrainConfig]:
    """(the recipe as written, with --set applied; its typed pretraining settings)."""
    raw = yaml.safe_load(Path(path).read_text())
    if not isinstance(raw, dict) or "pretrain" not in raw:
        raise ConfigError(f"{path}: a base recipe is a mapping with a `pretrain:` block")
    raw = apply_overrides(copy.deepcopy(raw), sets or [])
    cfg = build(PretrainConfig, {**raw["pretrain"], "seed": raw.get("seed", 0)}, "pretrain")
    if cfg.source != "world":
        raise ConfigError("pretrain.source: a base is pretrained on the world source (`world`)")
    return raw, cfg


def weights_fingerprint(export: str | Path) -> str:
    """sha256 of the exported weights (what the card and jade_model.json record, and the test checks)."""
    return hashlib.sha256((Path(export) / "model.safetensors").read_bytes()).hexdigest()


def hardware() -> str:
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else ""
    )
    return f"{os.cpu_count()} x {cpu or platform.machine()}"


def stage_configs(raw: dict, cfg: PretrainConfig) -> list[PretrainConfig]:
    """The recipe's stages: the `pretrain:` block, then each entry of `stages:` (settings changed from the stage
    before; `world` merges key by key). A later stage continues from the one before (its weights and tokenizer,
    with a fresh optimizer, sampler and schedule) and draws the scenes after the ones the stages before drew."""
    out, d = [cfg], cfg.to_dict()
    for k, change in enumerate(raw.get("stages") or [], start=2):
        if not isinstance(change, dict):
            raise ConfigError(f"stages[{k - 2}]: a stage is a mapping of the pretrain settings it changes")
        prev = out[-1]
        world = prev.world or WorldSpec()
        drawn = world.first_scene + -(-prev.steps // world.chunk_steps) * world.chunk_images
        # nested settings merge key by key (`arch`: e.g. a deeper decoder, models/pretrain/grow.py)
        d = {**d, **change, **{key: {**d[key], **(change.get(key) or {})} for key in ("world", "arch")}}
        d["world"]["first_scene"] = drawn
        out.append(build(PretrainConfig, d, f"stages[{k - 2}]"))
    return out


def make_base(
    executor: Executor,
    recipe: str | Path = RECIPE,
    sets: list[str] | None = None,
    work: str | Path | None = None,
    out: str | Path | None = None,
) -> dict:
    """Pretrain per the recipe, stage by stage (resuming ``work`` where it holds checkpoints of the same
    recipe; stage k > 1 in ``work/stage-k``), then export the base to ``out`` (default models/bases/<name>);
    returns its jade_model.json."""
    raw, cfg = load_recipe(recipe, sets)
    stages = stage_configs(raw, cfg)
    name = raw.get("name", "base")
    work = Path(work or f"runs/base-{name}").resolve()
    out = Path(out or BASES_DIR / name)
    t0, prev, probes, seconds, done = time.time(), None, [], 0.0, 0
    for k, stage in enumerate(stages, start=1):
        dir_ = work if k == 1 else work / f"stage-{k}"
        source = WorldSource(
            stage.world or WorldSpec(), stage.steps, stage.arch.image_size, stage.probe_images
        )
        job = PretrainJob(stage, str(dir_), init=prev and str(prev), source=source)
        executor.train(pretrain_loop, job, TrainResources(), dir_ / "ray")
        state = json.loads((dir_ / "checkpoint" / "state.json").read_text())
        stage_probes = state.get("probes", [])
        probes += [{**p, "stage": k, "step": p["step"] + done} for p in stage_probes]
        seconds += stage_probes[-1]["elapsed_s"] if stage_probes else 0.0
        done, prev = done + stage.steps, dir_
    model, processor, state = load_checkpoint(prev)
    last = stages[-1]
    meta = {
        "role": "base",
        "name": name,
        "attention": last.attention,
        "recipe": raw,
        "seed": cfg.seed,
        "examples_seen": sum(s.steps * s.batch_size * s.grad_accum for s in stages),
        "steps": done,
        "stages": len(stages),
        "train_seconds": round(seconds or time.time() - t0, 1),
        "hardware": hardware(),
        "torch_threads": last.threads,
        "probe": probes[-1] if probes else None,
        "probe_curve": probes,
        "architecture": last.arch.__dict__,
        "made_by": "jade base (the bundled pretrainer, world source)",
    }
    with atomic_dir(out) as tmp:
        factory.save(model.lm.eval(), processor, tmp, meta)
        meta["weights_sha256"] = weights_fingerprint(tmp)
        atomic_write_json(tmp / factory.JADE_META, meta)
        (tmp / "README.md").write_text(model_card(meta))
    log.info("base: %s written (%.0f s of pretraining)", out, meta["train_seconds"])
    return meta


def model_card(meta: dict) -> str:
    """The base's card: what it is, its recipe, seed, examples seen, time and hardware, the probe per template
    beside the answer prior, and the seeds tried (from the recipe's `seeds_tried`)."""
    p = meta.get("probe") or {}
    rows = [
        f"| {t} | {acc:.3f} | {p['prior_by_template'].get(t, 0):.3f} |"
        for t, acc in p.get("by_template", {}).items()
    ]
    tried = meta["recipe"].get("seeds_tried") or []
    curve = ", ".join(f"{c['step']}: {c['qa']:.2f}" for c in meta.get("probe_curve", []))
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: image-text-to-text",
        "tags: [jade-factory, paligemma, sample-world]",
        "---",
        "",
        f"# {meta['name']}: the sample world's pretrained tiny PaliGemma",
        "",
        "The base that the sample manifest fine-tunes its generator and its filter from (`models.<role>.base`), as "
        "JADE fine-tunes both from one pretrained model. Made by `make base` (`jade base`): the bundled pretrainer on "
        "an unlimited stream of freshly drawn sample-world scenes, none of them an image of the world's datasets "
        "(so none that `jade eval` or its `model_accuracy` probe checks), with object-aware tasks mixed by the "
        "pretrainer's dynamic difficulty sampling.",
        "",
        "## Facts",
        "",
        f"- architecture: {json.dumps(meta['architecture'])}; attention rule `{meta['attention']}`",
        f"- seed {meta['seed']}; {meta['steps']} steps; {meta['examples_seen']:,} examples seen",
        f"- pretraining time {meta['train_seconds'] / 60:.1f} min on {meta['hardware']} ({meta['torch_threads']} torch thread(s))",
        f"- weights sha256 `{meta.get('weights_sha256', '')}`",
        f"- recipe: `manifests/bases/{meta['name']}.yaml` as run: `{json.dumps(meta['recipe']['pretrain'], sort_keys=True)}`",
        *[
            f"- then stage {k}, from the weights of the stage before: `{json.dumps(st, sort_keys=True)}`"
            for k, st in enumerate(meta["recipe"].get("stages") or [], start=2)
        ],
        "",
        "## Probe (held-out scenes, greedy, never trained on)",
        "",
        f"Templated questions: accuracy {p.get('qa', 0):.3f} against an answer prior of {p.get('qa_prior', 0):.3f}; "
        f"locating an object by colour and shape (box IoU >= 0.5): {p.get('locate', 0):.3f}; describing a true box "
        f"(colour and shape named right): {p.get('describe', 0):.3f}.",
        "",
        "| template | accuracy | answer prior |",
        "|---|---|---|",
        *rows,
        "",
        f"Accuracy over training (step: accuracy): {curve}",
        "",
        "## Seeds tried",
        "",
        *([f"- seed {t['seed']}: {t['result']}" for t in tried] or ["- only the seed above"]),
        "",
    ]
    return "\n".join(lines)


def check_base(path: str | Path) -> dict:
    """The recorded meta of a shipped base, after checking its weights against the recorded fingerprint."""
    meta = read_json(Path(path) / factory.JADE_META) or {}
    if meta.get("weights_sha256") != weights_fingerprint(path):
        raise ValueError(f"{path}: model.safetensors does not match the fingerprint in {factory.JADE_META}")
    return meta
