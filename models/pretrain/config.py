"""The pretrainer's settings: one typed object, validated once; errors name the key."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from jade.models.pretrain.model import MASKS
from jade.models.pretrain.sampler import STRATEGIES
from jade.models.pretrain.tasks import TASKS

DATA_VARIANTS = ("alttext", "filtered", "unfiltered")


@dataclass
class PretrainConfig:
    steps: int = 300
    batch_size: int = 32  # examples per step over all tasks
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    # dynamic: share proportional to the loss summed over the last `window` steps (Piergiovanni et al., K=100)
    mixing: str = "dynamic"
    window: int = 100
    min_per_task: int = 4  # the paper's floor: every task gets at least this many samples per batch
    mask: str = "prefix"  # prefix-LM (PaliGemma's) or fully causal
    # alttext: captions only; filtered: + the kept QA and dense captions; unfiltered: + the rejected QA pairs
    data: str = "filtered"
    arch: dict = field(default_factory=lambda: {"image_size": 48, "patch_size": 16, "vision_hidden": 64,
                                                "vision_layers": 2, "text_hidden": 128, "text_layers": 2,
                                                "head_dim": 16, "vocab_size": 800})  # fmt: skip
    embed_dim: int = 64  # ITC joint space
    eval_fraction: float = 0.2  # images held out (by key hash) for retrieval and captioning
    streaming: bool | None = None  # None: stream when the dataset's files exceed 1 GiB
    max_images: int | None = None  # cap on pretraining images (streaming reads only this many)
    checkpoint_every: int = 100
    log_every: int = 10
    amp: bool = True  # bf16 autocast where the hardware has it (CUDA); ignored on CPU
    seed: int = 0
    threads: int | None = 1  # torch threads: tiny matrices, and more threads on shared cores cost 10-30x
    # evaluation: the short, fixed VQA fine-tune and the held-out question count
    vqa_steps: int = 150
    vqa_batch_size: int = 32
    vqa_lr: float = 1e-3
    vqa_eval_questions: int = 300

    def __post_init__(self) -> None:
        for name, allowed in (("mixing", STRATEGIES), ("mask", MASKS), ("data", DATA_VARIANTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"pretrain.{name}: {getattr(self, name)!r} is not one of {allowed}")
        for t in self.tasks:
            if t not in TASKS:
                raise ValueError(f"pretrain.tasks: unknown task {t!r} (known: {', '.join(TASKS)})")
        if not self.tasks:
            raise ValueError("pretrain.tasks: name at least one task")
        if self.mixing != "round_robin" and self.min_per_task * len(self.tasks) > self.batch_size:
            raise ValueError(f"pretrain.batch_size: {self.batch_size} is below min_per_task x tasks "
                             f"({self.min_per_task} x {len(self.tasks)})")  # fmt: skip
        for name in ("steps", "batch_size", "grad_accum", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"pretrain.{name}: must be at least 1")

    @classmethod
    def from_dict(cls, d: dict) -> PretrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"pretrain: unknown keys {sorted(unknown)}")
        return cls(**d)
