"""The pretraining loop: plain PyTorch, run by `pipeline.executor` inside a Ray Train worker (or in-process).

Each step the task sampler splits the batch among the tasks; each task builds its own batch and returns its
loss; the step's loss is the share-weighted sum. With several workers the gradients and the per-task losses
are averaged over workers by hand (the tasks call the model's parts directly, which DDP's wrapper would not
see), so every worker's sampler makes the same allocation. Rank 0 writes checkpoints (safetensors weights,
optimizer state, sampler state and the task-share history) every `checkpoint_every` steps and at the end;
a rerun with the same output directory resumes from the last one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from jade.models import factory
from jade.models.pretrain.base import TaskContext
from jade.models.pretrain.config import PretrainConfig
from jade.models.pretrain.data import load_split
from jade.models.pretrain.model import PretrainModel
from jade.models.pretrain.sampler import TaskSampler
from jade.models.pretrain.tasks import TASKS
from jade.models.train import _ns, adamw, clip_and_step, lr_at, set_lr

log = logging.getLogger("jade")
CKPT = "checkpoint"


def build_model(cfg: PretrainConfig, processor) -> PretrainModel:
    torch.manual_seed(cfg.seed)
    return PretrainModel(factory.build_model(_ns(cfg.arch), processor, seed=cfg.seed), cfg.embed_dim)


def load_checkpoint(out_dir: str | Path) -> tuple[PretrainModel, object, dict]:
    """(model, processor, state) from ``out_dir`` (the config travels in state.json, as in nanoGPT)."""
    out = Path(out_dir)
    state = json.loads((out / CKPT / "state.json").read_text())
    processor = factory.AutoProcessor.from_pretrained(out / "processor")
    model = build_model(PretrainConfig.from_dict(state["config"]), processor)
    load_model(model, out / CKPT / "model.safetensors")
    return model.eval(), processor, state


def _processor(path: Path, texts: list[str], arch: dict):
    if (path / "processor_config.json").exists():
        return factory.AutoProcessor.from_pretrained(path)
    processor = factory.build_processor(texts, _ns(arch))
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    processor.save_pretrained(tmp)
    with contextlib.suppress(OSError):  # another worker may have won the race: same tokenizer either way
        tmp.rename(path)
    shutil.rmtree(tmp, ignore_errors=True)
    return factory.AutoProcessor.from_pretrained(path)


def _save(out: Path, model, opt, state: dict) -> None:
    tmp, final = out / f".{CKPT}.tmp", out / CKPT
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state))  # written last: a checkpoint with it is complete
    old = out / f".{CKPT}.old"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _all_mean(t: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size > 1:
        torch.distributed.all_reduce(t)
        t /= world_size
    return t


def pretrain_loop(config: dict, rank: int = 0, world_size: int = 1, prepare_model=None, report=None) -> dict:
    """config keys: pretrain (PretrainConfig as a dict), dataset (the published dataset dir), out_dir,
    use_gpu. `prepare_model` is accepted for the executor's interface and not used (see the module doc)."""
    cfg = PretrainConfig.from_dict(config["pretrain"])
    torch.set_num_threads(int(cfg.threads or os.cpu_count() or 1))
    device = "cuda" if torch.cuda.is_available() and config.get("use_gpu") else "cpu"
    out = Path(config["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    data, _ = load_split(config["dataset"], cfg.data, cfg.eval_fraction, cfg.arch["image_size"],
                         cfg.streaming, cfg.max_images)  # fmt: skip
    processor = _processor(out / "processor", data.vocab_texts, cfg.arch)
    model = build_model(cfg, processor).to(device).train()
    tasks = [TASKS[n]() for n in cfg.tasks]
    pools = {t.name: t.examples(data)[rank::world_size] for t in tasks}
    tasks = [t for t in tasks if pools[t.name]]
    if not tasks:
        raise ValueError(f"{config['dataset']}: no examples for any of the tasks {cfg.tasks}")
    log.info(
        "pretrain: %d images; examples per task: %s", len(data), {t.name: len(pools[t.name]) for t in tasks}
    )
    sampler = TaskSampler({t.name: len(pools[t.name]) for t in tasks}, cfg.batch_size, cfg.mixing, cfg.window,
                          cfg.min_per_task)  # fmt: skip
    opt = adamw(model, cfg.lr, cfg.weight_decay)
    start, history = 0, []
    if (out / CKPT / "state.json").exists():  # resume
        state = json.loads((out / CKPT / "state.json").read_text())
        load_model(model, out / CKPT / "model.safetensors")
        opt.load_state_dict(torch.load(out / CKPT / "optimizer.pt", weights_only=True))
        sampler.load_state_dict(state["sampler"])
        start, history = int(state["step"]), state["history"]
        log.info("pretrain: resumed from step %d", start)
    writer = None
    if rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"), purge_step=start or None)
    amp = cfg.amp and device == "cuda" and torch.cuda.is_bf16_supported()
    t0, ema = time.time(), None
    for step in range(start, cfg.steps):
        lr = lr_at(step, cfg.steps, cfg.warmup_steps, cfg.lr)
        set_lr(opt, lr)
        alloc = sampler.allocate(step)
        losses = dict.fromkeys(alloc, 0.0)
        for micro in range(cfg.grad_accum):
            # seeded per step: a resumed run draws the same examples as an uninterrupted one
            rng = np.random.default_rng([cfg.seed, rank, step, micro])
            ctx = TaskContext(model, processor, data, cfg.mask, device, rng)
            total = 0.0
            for t in tasks:
                n = alloc[t.name]
                if n == 0:
                    continue
                pool = pools[t.name]
                pick = rng.choice(len(pool), size=n, replace=len(pool) < n)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    loss = t.loss(ctx, [pool[i] for i in pick])
                total = total + (n / cfg.batch_size) * loss
                losses[t.name] += loss.item() / cfg.grad_accum
            (total / cfg.grad_accum).backward()
        for p in model.parameters():
            if p.grad is not None:
                _all_mean(p.grad, world_size)
        clip_and_step(model, opt)
        names = [n for n in alloc if alloc[n] > 0]
        mean = _all_mean(torch.tensor([losses[n] for n in names]), world_size).tolist()
        sampler.update(dict(zip(names, mean, strict=True)))
        shares = {n: alloc[n] / cfg.batch_size for n in alloc}
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
                log.info("pretrain [%-20s] %d/%d loss %.3f shares %s (%.2f s/step, ETA %.0fs)", bar, step + 1,
                         cfg.steps, ema, " ".join(f"{n}={s:.2f}" for n, s in shares.items()), elapsed / done,
                         elapsed / done * (cfg.steps - step - 1))  # fmt: skip
        if rank == 0 and ((step + 1) % cfg.checkpoint_every == 0 or last):
            state = {"step": step + 1, "config": config["pretrain"], "sampler": sampler.state_dict(),
                     "history": history, "tasks": [t.name for t in tasks]}  # fmt: skip
            _save(out, model, opt, state)
    if writer is not None:
        writer.close()
    return {"steps": cfg.steps, "loss_ema": ema, "train_s": time.time() - t0}
