"""`jade plan MANIFEST`: the memory plan of every training role (generator, filter, the bundled pretrainer)
before any work, from the architecture alone (`models.memplan`): no data, no weights, unset roots allowed.
`jade run` prints the same plan and refuses a run whose fine-tuning would not fit the GPUs' memory, naming the
smallest change that would."""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import re
import shlex
from pathlib import Path

from jade.app.manifest import ROLES, Manifest, ManifestError, load_manifest, resolve_manifest_path
from jade.models import memplan
from jade.models.specs import LoRA, Training
from jade.stages.finetune import Finetune

__all__ = [
    "PlanError",
    "RolePlan",
    "check_run",
    "cmd_plan",
    "describe",
    "load",
    "plan_manifest",
    "role_config",
    "role_settings",
    "role_workload",
    "roles_to_train",
    "smallest_fix",
    "table",
    "to_json",
]

log = logging.getLogger("jade")
PROMPT_TOKENS = 4  # <bos>, the task words ("caption en"), the newline before the target
LOC_TOKENS = 4  # a dense caption's box
FREEZE_VISION = ["vision_tower", "multi_modal_projector"]  # PaliGemma's own fine-tuning recipe


class PlanError(ManifestError):
    """A role's fine-tuning does not fit the GPU's memory; the message names the smallest change that does."""


# ---------------------------------------------------------------------------------------------- loading
def load(manifest: str, overrides: list[str] | None = None) -> Manifest:
    """The manifest as `jade run` loads it, except that an unset ${VAR} is left as it is: the plan reads no
    source (${JADE_BASES} is the package's bases unless set: `load_manifest`)."""
    text = resolve_manifest_path(manifest).read_text() + " ".join(overrides or [])
    env = dict(os.environ)
    for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text):
        if name != "JADE_BASES":
            env.setdefault(name, "${" + name + "}")
    return load_manifest(manifest, overrides, env)


def role_config(base: str | None, arch, trust_remote_code: bool, at: str):
    """(transformers config, where it came from): the base's own config.json, the Hugging Face cache, the
    published PaliGemma-3B-224 sizes, transformers' PaliGemma defaults; from scratch: `architecture`."""
    from transformers import AutoConfig, PaliGemmaConfig

    from jade.models import factory

    if base:
        if (Path(base) / "config.json").is_file():
            return AutoConfig.from_pretrained(
                base, trust_remote_code=trust_remote_code
            ), f"{base}/config.json"
        try:
            cfg = AutoConfig.from_pretrained(base, local_files_only=True, trust_remote_code=trust_remote_code)
            return cfg, f"the cached config of {base}"
        except (OSError, ValueError):
            pass
        name = base.lower()
        if "paligemma" in name and "3b" in name and "224" in name:
            return memplan.paligemma_3b_224(), "the published PaliGemma-3B-224 sizes (no cached config)"
        if "paligemma" in name:
            return PaliGemmaConfig(), "transformers' PaliGemmaConfig defaults (no cached config)"
        raise ManifestError(
            f"{at}.base: no architecture for {base!r}: not a folder with config.json, not in the Hugging Face "
            "cache, not a PaliGemma hub id"
        )
    vocab = arch.vocab_size + 1153  # at most: the trained tokenizer + <image> + 1024 <loc> + 128 <seg>
    return factory.arch_config(arch, vocab, vocab - 1, 0, 2, 1), f"{at}.architecture (from scratch)"


def role_workload(m: Manifest, role: str) -> memplan.Workload:
    """Tokens per example of a role, estimated from its tasks and the generation limits (targets as long as
    what the model may generate; an answer's prompt holds the question)."""
    spec, mx = getattr(m.models, role), m.generate.max_new_tokens
    shapes = {
        "caption": (PROMPT_TOKENS, LOC_TOKENS + mx.caption + 1),
        "question": (PROMPT_TOKENS, mx.question + 1),
        "answer": (PROMPT_TOKENS + mx.question, mx.answer + 1),
    }
    tasks = [shapes[t] for t in spec.tasks] or [shapes["answer"]]
    text = max(p + t for p, t in tasks)
    return memplan.Workload(spec.train.micro(), spec.train.batch_size, text, max(t for _, t in tasks))


def role_settings(train: Training, m: Manifest, device: str) -> memplan.Settings:
    res = m.resources.train
    return memplan.Settings(
        precision=train.precision,
        gradient_checkpointing=train.gradient_checkpointing,
        freeze=tuple(train.freeze),
        lora=train.lora,
        strategy=res.strategy,
        workers=res.workers,
        device=device,
    )


# ---------------------------------------------------------------------------------------------- planning
@dataclasses.dataclass
class RolePlan:
    role: str
    plan: memplan.Plan
    summary: str  # the settings and assumptions, in words
    fix: str | None = None  # the smallest change that fits (when it does not)


def plan_manifest(m: Manifest, gpu_bytes: float | None, device: str = "cuda") -> list[RolePlan]:
    """The plan of the generator, the filter and the bundled pretrainer."""
    out, models = [], {}
    for role in ROLES:
        spec, at = getattr(m.models, role), f"models.{role}"
        config, source = role_config(spec.base, spec.architecture, m.models.trust_remote_code, at)
        key = config.to_json_string()
        model = models.setdefault(key, memplan.meta_model(config))
        w, s = role_workload(m, role), role_settings(spec.train, m, device)
        c = memplan.counts(model, s.freeze, s.lora, f"{at}.train")
        p = memplan.plan(config, w, s, c, gpu_bytes)
        fix = (
            None
            if p.fits is not False
            else smallest_fix(config, model, w, s, spec.train, f"{at}.train", gpu_bytes)
        )
        out.append(RolePlan(role, p, describe(config, source, w, s, c), fix))
    out.append(pretrainer_plan(m, gpu_bytes, device))
    return out


def pretrainer_plan(m: Manifest, gpu_bytes: float | None, device: str) -> RolePlan:
    """The bundled pretrainer (`pretrain:`): its PaliGemma with the ITC/ITM heads, bf16 autocast on CUDA when
    `amp`, one worker (`jade pretrain --workers` replicates it), 32 text tokens of which 16 are targets."""
    import torch

    from jade.models import factory
    from jade.models.pretrain.model import PretrainModel

    cfg = m.pretrain
    vocab = cfg.arch.vocab_size + 1153
    config = factory.arch_config(cfg.arch, vocab, vocab - 1, 0, 2, 1)
    with torch.device("meta"):
        model = PretrainModel(memplan.meta_model(config), cfg.embed_dim)
    w = memplan.Workload(max(1, cfg.batch_size // cfg.grad_accum), cfg.batch_size, 32, 16)
    s = memplan.Settings(precision="bf16" if cfg.amp and device == "cuda" else "fp32", device=device)
    c = memplan.counts(model)
    p = memplan.plan(config, w, s, c, gpu_bytes)
    return RolePlan("pretrainer", p, describe(config, "pretrain.arch", w, s, c))


def smallest_fix(config, model, w, s, train: Training, at: str, gpu_bytes) -> str | None:
    """The change with the fewest settings (then the least intrusive: checkpointing, micro-batches and bf16
    before freezing, freezing before adapters) whose plan fits; None when nothing does."""
    micros = sorted({w.micro_batch, *(b for b in (16, 8, 4, 2, 1) if b < w.micro_batch)}, reverse=True)
    freezes = [list(s.freeze)] + (
        [sorted(set(s.freeze) | set(FREEZE_VISION))] if not set(FREEZE_VISION) <= set(s.freeze) else []
    )
    loras = [s.lora] + ([LoRA()] if s.lora is None else [])
    cache: dict = {}
    best = None
    for ckpt, prec, micro, frz, lora in itertools.product(
        [s.gradient_checkpointing, True], [s.precision, "bf16"], micros, freezes, loras
    ):
        changes = []
        if ckpt != s.gradient_checkpointing:
            changes.append((1, "gradient_checkpointing=true"))
        if prec != s.precision:
            changes.append((1, "precision=bf16"))
        if micro != w.micro_batch:
            changes.append((1, f"micro_batch={micro}"))
        if frz != list(s.freeze):
            changes.append((2, f"freeze=[{', '.join(frz)}]"))
        if lora is not s.lora:
            changes.append((3, f"lora={{r: {lora.r}, alpha: {lora.alpha:g}}}"))
        if not changes:
            continue
        key = (tuple(frz), lora is not None)
        if key not in cache:
            cache[key] = memplan.counts(model, tuple(frz), lora, at)
        s2 = dataclasses.replace(s, gradient_checkpointing=ckpt, precision=prec, freeze=tuple(frz), lora=lora)
        p = memplan.plan(config, dataclasses.replace(w, micro_batch=micro), s2, cache[key], gpu_bytes)
        if p.fits:
            rank = (len(changes), sum(c for c, _ in changes), -micro, p.peak)
            if best is None or rank < best[0]:
                best = (rank, changes, p)
    if best is None:
        return None
    _, changes, p = best
    sets = " ".join(f"--set {shlex.quote(f'{at}.{c}')}" for _, c in changes)
    return (
        f"set {' and '.join(f'{at}.{c}' for _, c in changes)} (plan {p.peak / memplan.GIB:.1f} GiB): {sets}"
    )


def describe(config, source, w: memplan.Workload, s: memplan.Settings, c: memplan.Counts) -> str:
    v = config.vision_config
    image = (v.image_size // v.patch_size) ** 2
    parts = [
        s.precision,
        f"micro_batch {w.micro_batch} of {w.batch_size}",
        "gradient checkpointing" if s.gradient_checkpointing else "no checkpointing",
        f"frozen: {', '.join(s.freeze)}" if s.freeze else "nothing frozen",
        f"LoRA r={s.lora.r}" if s.lora else "no LoRA",
        f"{s.strategy} x{s.workers}",
        f"{image + w.text_tokens} tokens an example ({image} image + {w.text_tokens} text, {w.target_tokens} "
        "targets: estimated)",
        f"architecture: {source}",
    ]
    return ", ".join(parts)


# ---------------------------------------------------------------------------------------------- output
def table(plans: list[RolePlan], gpu_gib: float | None) -> list[str]:
    head = f"{'role':<11}{'params':>9}{'trainable':>11}{'weights':>9}{'grads':>8}{'optim':>8}{'activ':>8}{'peak':>8}  fits"
    lines = [
        "memory plan per GPU (GiB)"
        + (f", against {gpu_gib:g} GiB (fits: peak <= {memplan.FIT_FRACTION:.0%} of it)" if gpu_gib else ""),
        head,
    ]
    for rp in plans:
        j = rp.plan.to_json()
        fits = {True: "yes", False: "NO", None: "-"}[j["fits"]]
        lines.append(
            f"{rp.role:<11}{j['params'] / 1e9:>8.3f}B{j['trainable_params'] / 1e9:>10.3f}B{j['weights_gib']:>9.2f}"
            f"{j['grads_gib']:>8.2f}{j['optimizer_gib']:>8.2f}{j['activations_gib']:>8.2f}{j['peak_gib']:>8.2f}  {fits}"
        )
    for rp in plans:
        lines.append(f"  {rp.role}: {rp.summary}")
        if rp.fix:
            lines.append(f"  {rp.role} does not fit; the smallest change that does: {rp.fix}")
    return lines


def to_json(plans: list[RolePlan]) -> dict:
    return {rp.role: {**rp.plan.to_json(), "settings": rp.summary, "fix": rp.fix} for rp in plans}


def local_gpu_bytes() -> float | None:
    """The smallest GPU memory of this machine, None without a GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    return float(
        min(torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count()))
    )


def cluster_gpu_bytes(executor) -> float | None:
    """GPU memory where training will run: this machine's GPUs, else (a Ray cluster with GPUs) one GPU
    worker's, else None."""
    local = local_gpu_bytes()
    if local is not None or getattr(executor, "name", "") != "ray" or not executor.gpus():
        return local
    import ray

    @ray.remote(num_gpus=1)
    def probe() -> float:
        import torch

        return float(torch.cuda.get_device_properties(0).total_memory)

    return ray.get(probe.remote())


# ---------------------------------------------------------------------------------------------- commands
def cmd_plan(args) -> int:
    try:
        m = load(args.manifest, args.set)
        gpu = args.gpu_memory * memplan.GIB if args.gpu_memory else local_gpu_bytes()
        plans = plan_manifest(m, gpu)
    except ManifestError as e:
        print(f"jade plan: {e}")
        return 2
    if args.json:
        print(json.dumps(to_json(plans), indent=2))
    else:
        print("\n".join(table(plans, gpu / memplan.GIB if gpu else None)))
        if gpu is None:
            print("no GPU here and no --gpu-memory: nothing to check the plan against")
    return 1 if any(rp.plan.fits is False for rp in plans if rp.role in ROLES) else 0


def roles_to_train(run, only: list[str] | None, fingerprints: dict[str, str]) -> list[str]:
    """The roles `jade run` will fine-tune: selected (``--stages``) and without a checkpoint of the same
    settings (`stages.finetune`), read through the run directory (local or on an object store)."""
    from jade.models import factory

    return [
        r
        for r in ROLES
        if (not only or f"finetune_{r}" in only)
        and (run.read_json(f"{run.rel(Finetune.checkpoint(r))}/{factory.JADE_META}") or {}).get("fingerprint")
        != fingerprints[f"finetune_{r}"]
    ]


def check_run(m: Manifest, training: list[str], executor, gpu_memory: float | None) -> None:
    """Before `jade run` does any work: log the plan and raise `PlanError` when a role that will be trained
    (``training``) does not fit the GPUs' memory (``gpu_memory`` GiB, else detected)."""
    use_gpu = m.resources.train.use_gpu
    if gpu_memory:
        gpu = gpu_memory * memplan.GIB
    elif training and use_gpu is not False:
        gpu = cluster_gpu_bytes(executor)
    else:
        gpu = None
    plans = plan_manifest(m, gpu, "cuda" if gpu else "cpu")
    for line in table(plans, gpu / memplan.GIB if gpu else None):
        log.info("plan: %s", line)
    if gpu is None:
        log.info(
            "plan: fine-tuning runs without a GPU here (no --gpu-memory): not checked against a GPU's memory"
        )
        return
    bad = [rp for rp in plans if rp.role in training and rp.plan.fits is False]
    if bad:
        raise PlanError(
            "; ".join(
                f"models.{rp.role} needs {rp.plan.peak / memplan.GIB:.1f} GiB per GPU, more than "
                f"{memplan.FIT_FRACTION:.0%} of {gpu / memplan.GIB:.0f} GiB: "
                + (rp.fix or "no change of precision, micro_batch, checkpointing, freeze or lora fits")
                for rp in bad
            )
        )
