"""Fine-tuning loop of a generator or filter: plain PyTorch over (image, prefix, suffix) examples.

The loop knows nothing of Ray: `pipeline.executor` runs it inside a Ray Train worker and passes the hooks
(`prepare_model` for DDP, `report` for metrics, the worker's rank and world size). Run in-process, it trains
on one process with no hooks. The memory options of `models.specs.Training` (bf16, micro-batches, checkpointing,
freezing, LoRA) and the FSDP strategy are `models.tuning`'s; at their defaults the loop calls none of them.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from jade import remote
from jade.atomic import atomic_dir, atomic_write_json
from jade.models import attention as attention_rules
from jade.models import factory, tuning
from jade.models.specs import Architecture, Training

__all__ = [
    "ImageCache",
    "ResumeState",
    "TrainJob",
    "adamw",
    "clip_and_step",
    "example_batch",
    "lm_loss",
    "lr_at",
    "set_lr",
    "train_loop",
]
log = logging.getLogger("jade")
CHECKPOINT_EVERY = 200  # steps between resume checkpoints (TrainJob.checkpoint_every overrides)


@dataclass(frozen=True)
class TrainJob:
    """One fine-tuning run: what `train_loop` trains on, from what, and where it writes."""

    examples: str  # Parquet of (image_path, prefix, suffix)
    out_dir: str
    arch: Architecture
    train: Training
    seed: int = 0
    attention: str = attention_rules.DEFAULT
    base: str | None = None  # a pretrained checkpoint to start from; None: from scratch with processor_dir
    config: dict | None = None  # from scratch: a transformers config (random weights) instead of `arch`
    processor_dir: str | None = None
    resume_dir: str | None = None  # mid-training checkpoints (a re-run resumes); None: none
    checkpoint_every: int = CHECKPOINT_EVERY
    threads: int | None = None
    trust_remote_code: bool = False
    use_gpu: bool = False
    # resources.train.strategy: ddp (prepare_model wraps the model) | fsdp (the loop shards it: models.tuning)
    strategy: str = "ddp"
    meta: dict = field(default_factory=dict)  # recorded in the checkpoint's jade_model.json


class ImageCache:
    """Decoded images at the model's input size, LRU-bounded (images recur across examples)."""

    def __init__(self, size: tuple[int, int], capacity: int = 20000):
        self.size, self.capacity, self._items = size, capacity, OrderedDict()

    def get(self, path: str) -> Image.Image:
        img = self._items.get(path)
        if img is None:
            with Image.open(io.BytesIO(remote.read_bytes(path)) if remote.is_url(path) else path) as f:
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
    """AdamW with weight decay on matrices only (not on biases, norms or other 1-d parameters), over the
    parameters that train (frozen ones and a LoRA model's base weights are left out)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
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


def example_batch(
    processor,
    images: list,
    prefixes: list[str],
    suffixes: list[str] | None,
    device: str,
    attention: str = attention_rules.DEFAULT,
):
    """(image, prefix, suffix) examples -> model inputs with labels, padded to the longest, under the
    attention rule (`models.attention`). Without suffixes: generation inputs (no labels)."""
    batch = processor(
        text=[f"<image>{p}" for p in prefixes],
        images=images,
        suffix=suffixes,
        return_tensors="pt",
        padding="longest",
    )
    return attention_rules.apply(batch, processor.image_token_id, attention).to(device)


def lm_loss(model, batch) -> torch.Tensor:
    """Mean cross-entropy over the target tokens, with logits computed only at the positions that predict a
    target (``logits_to_keep``): the LM head over the ~2k-token vocabulary at every position is a quarter of
    a tiny model's step. Equal to ``model(**batch).loss``; goes through ``model``'s own forward (DDP)."""
    labels = batch["labels"]
    keep = (labels[:, 1:] != -100).any(0).nonzero()[:, 0]  # position t predicts token t + 1
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}, logits_to_keep=keep).logits
    target = labels[:, keep + 1]
    return torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), target.flatten(), ignore_index=-100
    )


def train_loop(
    job: TrainJob,
    rank: int = 0,
    world_size: int = 1,
    prepare_model: Callable | None = None,
    report: Callable[[dict], None] | None = None,
    on_step: Callable[[int, torch.nn.Module, float], None] | None = None,
    lr_schedule: Callable[[int], float] | None = None,
) -> dict:
    """Train per `job` and (rank 0) save the model to ``job.out_dir``. Returns the final metrics. Rank 0 also
    writes its progress (step, loss, ETA) to ``job.out_dir + ".progress.json"`` for the driver to show.
    ``on_step(steps_done, model, loss_ema)`` is called after every step (to score a model along the way);
    ``lr_schedule(step)`` replaces the warm-up + cosine schedule (`lr_at`)."""
    # Ray pins OMP threads to the worker's CPU share; use the cores we were given explicitly.
    torch.set_num_threads(int(job.threads or os.cpu_count() or 1))
    tcfg, seed, role = job.train, int(job.seed), job.meta.get("role", "")
    device = "cuda" if torch.cuda.is_available() and job.use_gpu else "cpu"
    attention = attention_rules.check(job.attention)
    if job.base:
        model, processor = factory.load(job.base, trust_remote_code=job.trust_remote_code)
    else:
        processor = factory.load_processor(job.processor_dir)
        if (
            job.config is not None
        ):  # a given architecture (bench/finetune_gpu.py: PaliGemma-3B, random weights)
            model = factory.from_config(job.config, seed)
        else:
            model = factory.build_model(job.arch, processor, seed=seed)
    model.train()
    config = model.config  # a sharded model is rebuilt from it to be saved
    # frozen modules, checkpointing, adapters, bf16 storage of frozen weights (none of it at the defaults),
    # before the model goes to the GPU: its frozen weights never take their fp32 size there
    model = tuning.apply_options(model, tcfg, seed, f"models.{role}.train")
    model.to(device)
    resume = ResumeState(job, rank, world_size)
    saved = resume.load(model)  # before DDP wraps the model: every worker starts from the same weights
    if (
        prepare_model is not None
    ):  # several workers: DDP (the executor's hook), or FSDP (resources.train.strategy)
        model = tuning.shard(model) if job.strategy == "fsdp" else prepare_model(model)
    sharded = tuning.is_sharded(model)
    micro = tcfg.micro()
    size = processor.image_processor.size
    cache = ImageCache((size["width"], size["height"]))

    table = pq.read_table(job.examples, columns=["image_path", "prefix", "suffix"])
    paths = table.column("image_path").to_pylist()
    prefixes = table.column("prefix").to_pylist()
    suffixes = table.column("suffix").to_pylist()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(paths))[rank::world_size]
    if tcfg.max_examples:
        order = order[: tcfg.max_examples]
    opt = adamw(model, tcfg.lr, tcfg.weight_decay)
    steps, bs = int(tcfg.steps), int(tcfg.batch_size)
    pos, t0, ema, start = 0, time.time(), None, 0
    if saved:  # continue exactly where the last checkpoint left off: weights, optimizer, data order, RNG
        if sharded:
            tuning.load_optimizer(model, opt, saved["optimizer"])
        else:
            opt.load_state_dict(saved["optimizer"])
        start, pos, ema = saved["step"], saved["pos"], saved["ema"]
        order = np.asarray(saved["order"])
        rng.bit_generator.state = saved["rng"]
        log.info("train %s: resumed from step %d/%d", role, start, steps)
    progress = Path(job.out_dir + ".progress.json")
    metrics: dict = {}
    for step in range(start, steps):
        if pos + bs > len(order):  # new epoch: reshuffle
            order, pos = rng.permutation(order), 0
        idx = order[pos : pos + bs]
        pos += bs
        # token_type_ids carry the attention rule (models.attention); example_batch refuses a batch without.
        batch = example_batch(
            processor,
            [cache.get(paths[i]) for i in idx],
            [prefixes[i] for i in idx],
            [suffixes[i] for i in idx],
            device,
            attention,
        )
        set_lr(opt, lr_schedule(step) if lr_schedule else lr_at(step, steps, int(tcfg.warmup_steps), tcfg.lr))
        if micro < len(idx):  # micro-batches of the padded batch: gradients accumulate (models.tuning)
            loss = tuning.accumulate(model, tuning.split(batch, micro), lm_loss, tcfg.precision, device)
        else:
            with tuning.autocast(tcfg.precision, device):
                loss = lm_loss(model, batch)
            loss.backward()
        clip_and_step(model, opt)
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        if on_step is not None:
            on_step(step + 1, model, ema)
        if resume.due(step + 1, steps):
            barrier = torch.distributed.barrier if world_size > 1 else None
            resume.save(
                model,
                opt,
                {
                    "step": step + 1,
                    "pos": pos,
                    "ema": ema,
                    "order": order.tolist(),
                    "rng": rng.bit_generator.state,
                },
                barrier,
            )
        if step % 50 == 0 or step == steps - 1:
            elapsed = time.time() - t0
            metrics = {"step": step + 1, "loss": loss.item(), "loss_ema": ema, "elapsed_s": elapsed}
            if report:
                report(metrics)
            if rank == 0:
                eta = elapsed / (step + 1 - start) * (steps - step - 1)
                atomic_write_json(
                    progress,
                    {
                        "role": role,
                        "step": step + 1,
                        "steps": steps,
                        "loss": ema,
                        "eta_s": eta,
                        "at": time.time(),
                    },
                )
                log.debug("train %s: step %d/%d loss %.3f (ETA %.0fs)", role, step + 1, steps, ema, eta)
    metrics = {"steps": steps, "loss_ema": ema, "train_s": time.time() - t0, "examples": len(paths)}
    state = tuning.full_state(model)[0] if sharded else None  # every worker takes part in the gathering
    if rank == 0:
        out = Path(job.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        # a plain checkpoint: DDP unwrapped, adapters merged, fp32 (models.tuning)
        inner = tuning.plain_model(model, tcfg, config, state)
        record = {**tcfg.options(), "strategy": job.strategy, "workers": world_size}
        factory.save(
            inner.cpu().eval(),
            processor,
            out,
            {**job.meta, "attention": attention, "train_metrics": metrics, "training": record},
        )
        progress.unlink(missing_ok=True)
    return metrics


class ResumeState:
    """Resume checkpoints of one training run under ``job.resume_dir`` (in the run directory, so shared
    by all nodes), written every ``checkpoint_every`` steps. Each worker writes its own data position (step,
    data order, RNG state) to ``resume.rank<r>.json``; then rank 0 writes weights (safetensors) and optimizer
    state to a temporary directory renamed into place. A checkpoint is used only when its fingerprint (the
    training settings) and worker count match and every worker's position is at its step; every worker reads
    the same files, so all of them make the same choice."""

    def __init__(self, job: TrainJob, rank: int, world_size: int):
        # a resume_dir at a URL (a run directory on an object store): through a local mirror (`jade.remote`)
        self.mirror = (
            remote.ResumeMirror(job.resume_dir, rank) if remote.is_url(job.resume_dir or "") else None
        )
        self.dir = self.mirror.local if self.mirror else Path(job.resume_dir) if job.resume_dir else None
        self.every = int(job.checkpoint_every or CHECKPOINT_EVERY)
        self.fp = str(job.meta.get("fingerprint", ""))
        self.rank, self.world, self.strategy = rank, world_size, job.strategy

    def _pos_file(self, rank: int) -> Path:
        return self.dir.with_name(f"{self.dir.name}.rank{rank}.json")

    def due(self, done: int, total: int) -> bool:
        return self.dir is not None and done < total and done % self.every == 0

    def save(self, model, opt, position: dict, barrier: Callable[[], None] | None = None) -> None:
        from safetensors.torch import save_model

        atomic_write_json(self._pos_file(self.rank), position, indent=None)
        if self.mirror:
            self.mirror.push_file(self._pos_file(self.rank), self.rank)
        if barrier:
            barrier()  # every position is on disk before the weights that go with them
        full = tuning.full_state(model, opt) if tuning.is_sharded(model) else None  # FSDP: every worker
        if self.rank != 0:
            return
        with atomic_dir(self.dir) as tmp:
            if full is not None:
                from safetensors.torch import save_file

                save_file(tuning.canonical(model, full[0]), str(tmp / "model.safetensors"))
                torch.save(full[1], tmp / "optimizer.pt")
            else:
                save_model(
                    model.module if hasattr(model, "module") else model, str(tmp / "model.safetensors")
                )
                torch.save(opt.state_dict(), tmp / "optimizer.pt")
            meta = {"step": position["step"], "fingerprint": self.fp, "world_size": self.world}
            if self.strategy != "ddp":  # its optimizer state is a full, name-keyed one
                meta["strategy"] = self.strategy
            (tmp / "state.json").write_text(json.dumps(meta))
        if self.mirror:
            self.mirror.push_dir(position["step"])

    def load(self, model) -> dict | None:
        if self.mirror:
            self.mirror.pull(self.world)
        if self.dir is None or not (self.dir / "state.json").exists():
            return None
        meta = json.loads((self.dir / "state.json").read_text())
        positions = [self._pos_file(r) for r in range(self.world)]
        ok = meta.get("fingerprint") == self.fp and meta.get("world_size") == self.world
        ok = ok and meta.get("strategy", "ddp") == self.strategy
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
        if self.mirror:
            self.mirror.clear()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            for p in self.dir.parent.glob(f"{self.dir.name}.rank*.json"):
                p.unlink(missing_ok=True)
