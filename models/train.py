"""Fine-tuning loop of a generator or filter: plain PyTorch over (image, prefix, suffix) examples.

The loop knows nothing of Ray: `pipeline.executor` runs it inside a Ray Train worker and passes the hooks
(`prepare_model` for DDP, `report` for metrics, the worker's rank and world size). Run in-process, it trains
on one process with no hooks.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from jade.models import factory

log = logging.getLogger("jade")
CHECKPOINT_EVERY = 200  # steps between resume checkpoints (config "checkpoint_every" overrides)


class ImageCache:
    """Decoded images at the model's input size, LRU-bounded (images recur across examples)."""

    def __init__(self, size: tuple[int, int], capacity: int = 20000):
        self.size, self.capacity, self._items = size, capacity, OrderedDict()

    def get(self, path: str) -> Image.Image:
        img = self._items.get(path)
        if img is None:
            with Image.open(path) as f:
                img = f.convert("RGB").resize(self.size, Image.BICUBIC)
            self._items[path] = img
            if len(self._items) > self.capacity:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(path)
        return img


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up, then cosine decay to 10% of the base rate."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def adamw(model, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, norms or other 1-d parameters)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=lr
    )


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def clip_and_step(model, opt: torch.optim.Optimizer) -> None:
    """Clip the gradient norm to 1, step, and clear the gradients."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def example_batch(processor, images: list, prefixes: list[str], suffixes: list[str], device: str):
    """(image, prefix, suffix) examples -> model inputs with labels, padded to the longest."""
    return processor(text=[f"<image>{p}" for p in prefixes], images=images, suffix=suffixes,
                     return_tensors="pt", padding="longest").to(device)  # fmt: skip


def train_loop(
    config: dict,
    rank: int = 0,
    world_size: int = 1,
    prepare_model: Callable | None = None,
    report: Callable[[dict], None] | None = None,
) -> dict:
    """Train per `config` and (rank 0) save the model to ``config["out_dir"]``. Returns the final metrics.

    config keys: examples (parquet path), processor_dir, base (None: from scratch), arch, train, seed,
    out_dir, threads, meta, trust_remote_code.
    """
    # Ray pins OMP threads to the worker's CPU share; use the cores we were given explicitly.
    torch.set_num_threads(int(config.get("threads") or os.cpu_count() or 1))
    tcfg = config["train"]
    seed = int(config["seed"])
    device = "cuda" if torch.cuda.is_available() and config.get("use_gpu") else "cpu"

    if config.get("base"):
        model, processor = factory.load(
            config["base"], trust_remote_code=config.get("trust_remote_code", False)
        )
    else:
        processor = factory.AutoProcessor.from_pretrained(config["processor_dir"])
        model = factory.build_model(_ns(config["arch"]), processor, seed=seed)
    model.train().to(device)
    resume = ResumeState(config, rank, world_size)
    saved = resume.load(model)  # before DDP wraps the model: every worker starts from the same weights
    if prepare_model is not None:
        model = prepare_model(model)
    size = processor.image_processor.size
    cache = ImageCache((size["width"], size["height"]))

    table = pq.read_table(config["examples"], columns=["image_path", "prefix", "suffix"])
    paths = table.column("image_path").to_pylist()
    prefixes = table.column("prefix").to_pylist()
    suffixes = table.column("suffix").to_pylist()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))[rank::world_size]
    if tcfg.get("max_examples"):
        order = order[: tcfg["max_examples"]]
    opt = adamw(model, tcfg["lr"], tcfg["weight_decay"])
    steps, bs = int(tcfg["steps"]), int(tcfg["batch_size"])
    pos, t0, ema, start = 0, time.time(), None, 0
    if saved:  # continue exactly where the last checkpoint left off: weights, optimizer, data order, RNG
        opt.load_state_dict(saved["optimizer"])
        start, pos, ema = saved["step"], saved["pos"], saved["ema"]
        order = np.asarray(saved["order"])
        rng.bit_generator.state = saved["rng"]
        log.info("train %s: resumed from step %d/%d", config.get("meta", {}).get("role", ""), start, steps)
    metrics: dict = {}
    for step in range(start, steps):
        if pos + bs > len(order):  # new epoch: reshuffle
            order, pos = rng.permutation(order), 0
        idx = order[pos : pos + bs]
        pos += bs
        batch = example_batch(processor, [cache.get(paths[i]) for i in idx], [prefixes[i] for i in idx],
                              [suffixes[i] for i in idx], device)  # fmt: skip
        # token_type_ids carry PaliGemma's prefix-LM mask (bidirectional over image + prompt, causal over the
        # target). Its decoder layers are built with is_causal=False: without them (or with an all-ones
        # mask) every position sees the answer it is trained to predict.
        if "token_type_ids" not in batch:
            raise ValueError("training batches need token_type_ids (the prefix-LM mask)")
        set_lr(opt, lr_at(step, steps, int(tcfg["warmup_steps"]), tcfg["lr"]))
        loss = model(**batch).loss
        loss.backward()
        clip_and_step(model, opt)
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if resume.due(step + 1, steps):
            barrier = torch.distributed.barrier if world_size > 1 else None
            resume.save(model, opt, {"step": step + 1, "pos": pos, "ema": ema, "order": order.tolist(),
                                     "rng": rng.bit_generator.state}, barrier)  # fmt: skip
        if step % 50 == 0 or step == steps - 1:
            elapsed = time.time() - t0
            metrics = {"step": step + 1, "loss": loss.item(), "loss_ema": ema, "elapsed_s": elapsed}
            if report:
                report(metrics)
            if rank == 0:
                eta = elapsed / (step + 1) * (steps - step - 1)
                log.info("train %s: step %d/%d loss %.3f (%.2f s/step, ETA %.0fs)", config.get("meta", {}).get("role", ""),
                         step + 1, steps, ema, elapsed / (step + 1), eta)  # fmt: skip
    metrics = {"steps": steps, "loss_ema": ema, "train_s": time.time() - t0, "examples": len(paths)}
    if rank == 0:
        out = Path(config["out_dir"])
        out.mkdir(parents=True, exist_ok=True)
        inner = model.module if hasattr(model, "module") else model
        factory.save(inner.cpu().eval(), processor, out, {**config.get("meta", {}), "train_metrics": metrics})
    return metrics


class ResumeState:
    """Resume checkpoints of one training run under ``config["resume_dir"]`` (in the run directory, so shared
    by all nodes), written every ``checkpoint_every`` steps. Each worker writes its own data position (step,
    data order, RNG state) to ``resume.rank<r>.json``; then rank 0 writes weights (safetensors) and optimizer
    state to a temporary directory renamed into place. A checkpoint is used only when its fingerprint (the
    training settings) and worker count match and every worker's position is at its step; every worker reads
    the same files, so all of them make the same choice."""

    def __init__(self, config: dict, rank: int, world_size: int):
        self.dir = Path(config["resume_dir"]) if config.get("resume_dir") else None
        self.every = int(config.get("checkpoint_every") or CHECKPOINT_EVERY)
        self.fp = str(config.get("meta", {}).get("fingerprint", ""))
        self.rank, self.world = rank, world_size

    def _pos_file(self, rank: int) -> Path:
        return self.dir.with_name(f"{self.dir.name}.rank{rank}.json")

    def due(self, done: int, total: int) -> bool:
        return self.dir is not None and done < total and done % self.every == 0

    def save(self, model, opt, position: dict, barrier: Callable[[], None] | None = None) -> None:
        from safetensors.torch import save_model

        from jade.pipeline.rundir import atomic_replace_dir

        self.dir.parent.mkdir(parents=True, exist_ok=True)
        tmp_pos = self._pos_file(self.rank).with_suffix(".tmp")
        tmp_pos.write_text(json.dumps(position))
        os.replace(tmp_pos, self._pos_file(self.rank))
        if barrier:
            barrier()  # every position is on disk before the weights that go with them
        if self.rank != 0:
            return
        tmp = self.dir.with_name(f".{self.dir.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_model(model.module if hasattr(model, "module") else model, str(tmp / "model.safetensors"))
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        meta = {"step": position["step"], "fingerprint": self.fp, "world_size": self.world}
        (tmp / "state.json").write_text(json.dumps(meta))
        atomic_replace_dir(tmp, self.dir)

    def load(self, model) -> dict | None:
        if self.dir is None or not (self.dir / "state.json").exists():
            return None
        meta = json.loads((self.dir / "state.json").read_text())
        positions = [self._pos_file(r) for r in range(self.world)]
        ok = meta.get("fingerprint") == self.fp and meta.get("world_size") == self.world
        ok = ok and all(p.exists() and json.loads(p.read_text())["step"] == meta["step"] for p in positions)
        if not ok:
            log.info("train: resume checkpoint in %s does not match this run; starting over", self.dir)
            return None
        from safetensors.torch import load_model

        load_model(model, str(self.dir / "model.safetensors"))
        state = json.loads(positions[self.rank].read_text())
        state["optimizer"] = torch.load(self.dir / "optimizer.pt", weights_only=True)
        return state

    def clear(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            for p in self.dir.parent.glob(f"{self.dir.name}.rank*.json"):
                p.unlink(missing_ok=True)


class _ns(dict):
    """Attribute access over an architecture dict (dataclasses cross process boundaries as dicts)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None
