"""The pretraining loop: plain PyTorch, run by `pipeline.executor` inside a Ray Train worker (or in-process).

Each step the task sampler splits the batch among the tasks; each task builds its own batch and returns its
loss; the step's loss is the share-weighted sum. With several workers the gradients and the per-task losses
are averaged over workers by hand (the tasks call the model's parts directly, which DDP's wrapper would not
see), so every worker's sampler makes the same allocation. Rank 0 writes checkpoints (safetensors weights,
optimizer state, sampler state and the task-share history) every `checkpoint_every` steps and at the end;
a rerun with the same output directory resumes from the last one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from jade.atomic import atomic_dir
from jade.models import factory
from jade.models.factory import Architecture
from jade.models.pixel_memo import memo_pixels
from jade.models.pretrain.base import LMTask, TaskContext, merged_lm_losses
from jade.models.pretrain.config import PretrainConfig
from jade.models.pretrain.data import make_source
from jade.models.pretrain.grow import load_grown
from jade.models.pretrain.init_vision import load_vision_tower
from jade.models.pretrain.model import PretrainModel
from jade.models.pretrain.sampler import TaskSampler
from jade.models.pretrain.tasks import make_task
from jade.models.train import adamw, clip_and_step, lr_at, set_lr

log = logging.getLogger("jade")
CKPT = "checkpoint"


def build_model(cfg: PretrainConfig, processor) -> PretrainModel:
    torch.manual_seed(cfg.seed)
    return PretrainModel(factory.build_model(cfg.arch, processor, seed=cfg.seed), cfg.embed_dim)


def load_checkpoint(out_dir: str | Path) -> tuple[PretrainModel, object, dict]:
    """(model, processor, state) from ``out_dir`` (the config travels in state.json, as in nanoGPT)."""
    out = Path(out_dir)
    state = json.loads((out / CKPT / "state.json").read_text())
    processor = memo_pixels(factory.AutoProcessor.from_pretrained(out / "processor"))
    model = build_model(PretrainConfig.from_dict(state["config"]), processor)
    load_model(model, out / CKPT / "model.safetensors")
    return model.eval(), processor, state


def _processor(path: Path, texts: list[str], arch: Architecture, copy_of: Path | None = None):
    """The run's tokenizer and processor, trained once (or copied from ``copy_of``, an earlier stage's): the
    first worker to finish renames its copy into place (a rename onto an existing folder fails, and the loser's
    copy, the same tokenizer, is dropped)."""
    if not (path / "processor_config.json").exists():
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        if copy_of is not None:
            shutil.copytree(copy_of, tmp)
        else:
            factory.build_processor(texts, arch).save_pretrained(tmp)
        try:
            tmp.rename(path)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return memo_pixels(factory.AutoProcessor.from_pretrained(path))


def _save(out: Path, model, opt, state: dict) -> None:
    with atomic_dir(out / CKPT) as tmp:
        save_model(model, str(tmp / "model.safetensors"))
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state))


def _all_mean(t: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size > 1:
        torch.distributed.all_reduce(t)
        t /= world_size
    return t


@dataclass(frozen=True)
class PretrainJob:
    pretrain: PretrainConfig
    out_dir: str
    dataset: str | None = None  # the published dataset directory (the dataset source)
    use_gpu: bool = False
    # a finished run's directory to continue from (a later stage of a base recipe): its weights and its
    # processor, with a fresh optimizer, sampler and schedule
    init: str | None = None
    # a source the application built (the world source of `jade base`: `app.world_source.WorldSource`);
    # None: the published dataset
    source: object | None = None


def pretrain_loop(
    job: PretrainJob, rank: int = 0, world_size: int = 1, prepare_model=None, report=None
) -> dict:
    """Pretrain per ``job``. `prepare_model` is accepted for the executor's interface and not used (see the
    module doc)."""
    cfg = job.pretrain
    torch.set_num_threads(int(cfg.threads or os.cpu_count() or 1))
    device = "cuda" if torch.cuda.is_available() and job.use_gpu else "cpu"
    out = Path(job.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    source = make_source(cfg, job.dataset, job.source)
    # a later stage keeps the earlier stage's tokenizer, unchanged
    init = Path(job.init) if job.init else None
    processor = _processor(out / "processor", source.vocab_texts(), cfg.arch, init and init / "processor")
    model = build_model(cfg, processor).to(device).train()
    if init and not (out / CKPT / "state.json").exists():
        had = load_grown(model, init / CKPT / "model.safetensors")
        grew = (
            f" (decoder grown from {had} to {cfg.arch.text_layers} layers)"
            if had != cfg.arch.text_layers
            else ""
        )
        log.info("pretrain: starting from %s%s", job.init, grew)
    elif cfg.init_vision and not (out / CKPT / "state.json").exists():
        n = load_vision_tower(model, cfg.init_vision)
        log.info("pretrain: vision tower (%d tensors) from %s", n, cfg.init_vision)
    tasks = [make_task(n, cfg) for n in cfg.tasks]

    def chunk_pools(c: int) -> tuple:
        data = source.chunk(c)
        return data, {t.name: t.examples(data)[rank::world_size] for t in tasks}

    chunk = source.chunk_of(0)
    data, pools = chunk_pools(chunk)
    tasks = [t for t in tasks if pools[t.name]]
    if not tasks:
        raise ValueError(f"{job.dataset}: no examples for any of the tasks {cfg.tasks}")
    log.info(
        "pretrain: %d images; examples per task: %s", len(data), {t.name: len(pools[t.name]) for t in tasks}
    )
    # ITC outside the mixing (itc_batch > 0): its own pairs every step; the sampler splits the batch among the rest
    fixed = {t.name: cfg.itc_batch for t in tasks if cfg.itc_batch and t.name == "itc"}
    mixed = [t for t in tasks if t.name not in fixed]
    sampler = TaskSampler(
        {t.name: len(pools[t.name]) for t in mixed}, cfg.batch_size, cfg.mixing, cfg.window, cfg.min_per_task
    )
    step_size = cfg.batch_size + sum(fixed.values())
    opt = adamw(model, cfg.lr, cfg.weight_decay)
    start, history, probes = 0, [], []
    if (out / CKPT / "state.json").exists():  # resume
        state = json.loads((out / CKPT / "state.json").read_text())
        load_model(model, out / CKPT / "model.safetensors")
        opt.load_state_dict(torch.load(out / CKPT / "optimizer.pt", weights_only=True))
        sampler.load_state_dict(state["sampler"])
        start, history, probes = int(state["step"]), state["history"], state.get("probes", [])
        log.info("pretrain: resumed from step %d", start)
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=start or None)
    amp = cfg.amp and device == "cuda" and torch.cuda.is_bf16_supported()
    t0, ema = time.time(), None
    for step in range(start, cfg.steps):
        if source.chunk_of(step) != chunk:  # the world source: fresh scenes
            chunk = source.chunk_of(step)
            data, pools = chunk_pools(chunk)
        lr = lr_at(step, cfg.steps, cfg.warmup_steps, cfg.lr)
        set_lr(opt, lr)
        alloc = {**sampler.allocate(step), **fixed}
        losses = dict.fromkeys(alloc, 0.0)
        for micro in range(cfg.grad_accum):
            # seeded per step: a resumed run draws the same examples as an uninterrupted one
            rng = np.random.default_rng([cfg.seed, rank, step, micro])
            ctx = TaskContext(model, processor, data, cfg.attention, device, rng)
            total, merged = 0.0, []
            for t in tasks:
                n, pool = alloc[t.name], pools[t.name]
                if n == 0 or not pool:
                    continue
                pick = rng.choice(len(pool), size=n, replace=len(pool) < n)
                if cfg.merge_lm_tasks and isinstance(t, LMTask):
                    merged.append((t, [pool[i] for i in pick]))
                    continue
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    loss = t.loss(ctx, [pool[i] for i in pick])
                total = total + (1.0 if t.name in fixed else n / cfg.batch_size) * loss
                losses[t.name] += loss.item() / cfg.grad_accum
            if merged:  # the generative tasks' examples in one forward pass, each task's loss its own
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    for name, loss in merged_lm_losses(ctx, merged).items():
                        total = total + (alloc[name] / cfg.batch_size) * loss
                        losses[name] += loss.item() / cfg.grad_accum
            (total / cfg.grad_accum).backward()
        for p in model.parameters():
            if p.grad is not None:
                _all_mean(p.grad, world_size)
        clip_and_step(model, opt)
        names = [n for n in alloc if alloc[n] > 0]
        mean = _all_mean(torch.tensor([losses[n] for n in names]), world_size).tolist()
        sampler.update({n: v for n, v in zip(names, mean, strict=True) if n not in fixed})
        shares = {n: alloc[n] / step_size for n in alloc}
        step_loss = sum(shares[n] * v for n, v in zip(names, mean, strict=True))
        ema = step_loss if ema is None else 0.95 * ema + 0.05 * step_loss
        history.append({"step": step + 1, "shares": shares, "losses": dict(zip(names, mean, strict=True))})
        if writer is not None:
            writer.add_scalar("loss/total", step_loss, step + 1)
            writer.add_scalar("lr", lr, step + 1)
            for n in alloc:
                writer.add_scalar(f"share/{n}", shares[n], step + 1)
            for n, v in zip(names, mean, strict=True):
                writer.add_scalar(f"loss/{n}", v, step + 1)
        last = step == cfg.steps - 1
        if (step + 1) % cfg.log_every == 0 or last:
            if report:
                report({"step": step + 1, "loss": step_loss, "loss_ema": ema})
            if rank == 0:
                done, elapsed = step + 1 - start, time.time() - t0
                bar = "#" * int(20 * (step + 1) / cfg.steps)
                log.info(
                    "pretrain [%-20s] %d/%d loss %.3f shares %s (%.2f s/step, ETA %.0fs)",
                    bar,
                    step + 1,
                    cfg.steps,
                    ema,
                    " ".join(f"{n}={s:.2f}" for n, s in shares.items()),
                    elapsed / done,
                    elapsed / done * (cfg.steps - step - 1),
                )
        if (
            rank == 0
            and hasattr(source, "probe")
            and (last or (cfg.probe_every and (step + 1) % cfg.probe_every == 0))
        ):
            model.eval()
            probes.append(
                {
                    "step": step + 1,
                    "elapsed_s": round(time.time() - t0, 1),
                    **source.probe(model.lm, processor, cfg.attention),
                }
            )
            model.train()
            p = probes[-1]
            log.info(
                "pretrain probe at %d: qa %.3f (prior %.3f) locate %.3f describe %.3f | %s",
                step + 1,
                p["qa"],
                p["qa_prior"],
                p["locate"],
                p["describe"],
                " ".join(f"{k}={v:.2f}" for k, v in p["by_template"].items()),
            )
            if writer is not None:
                for k in ("qa", "locate", "describe"):
                    writer.add_scalar(f"probe/{k}", p[k], step + 1)
        if rank == 0 and ((step + 1) % cfg.checkpoint_every == 0 or last):
            state = {
                "step": step + 1,
                "config": cfg.to_dict(),
                "sampler": sampler.state_dict(),
                "history": history,
                "tasks": [t.name for t in tasks],
                "probes": probes,
            }
            _save(out, model, opt, state)
    if writer is not None:
        writer.close()
    return {"steps": cfg.steps, "loss_ema": ema, "train_s": time.time() - t0}
