"""The pretrainer's settings: one typed object, validated once; errors name the key."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from jade.models.attention import RULES
from jade.models.pretrain.sampler import STRATEGIES
from jade.models.specs import Architecture
from jade.typed import build

DATA_VARIANTS = ("alttext", "filtered", "unfiltered")
# the task registry's names (models.pretrain.tasks.TASKS, which a test keeps equal): no model code imported here
TASKS = (
    "itc",
    "itm",
    "caption",
    "completion",
    "vqa",
    "dense",
    "objects",
    "locate",
    "detect",
    "relate",
    "binding",
    "query",
    "relation",
)
DATASET_TASKS = TASKS[
    :6
]  # the tasks a published dataset feeds (the default); the world source adds the others
SOURCES = ("dataset", "world")
ITC_TEXTS = (
    "alttext",
    "regions",
)  # what ITC pairs an image with: its alt-text, its dense captions as one text


@dataclass
class Downstream:
    """The downstream evaluation on benchmark files (`PretrainConfig.benchmarks`, the layout of
    `sampleworld.benchmarks`): short fine-tunes of a copy of the checkpoint, fixed and the same for every
    checkpoint (steps, batch, learning rate, seed), then the test split. VQA keeps its own `vqa_*` settings."""

    caption_steps: int = 300  # captioning fine-tune on the captioning train split (image -> a reference)
    # ITC fine-tune on the captioning train split before retrieval (ALBEF/BLIP/JADE's COCO protocol);
    # 0: zero-shot retrieval only
    retrieval_steps: int = 0
    region_steps: int = 300  # referring-expression fine-tune (expression -> box) on the region train split
    batch_size: int = 32
    lr: float = 1e-3
    caption_images: int = 1000  # test images captioned (retrieval ranks all of them)
    caption_max_tokens: int = 48
    region_refs: int = 1000  # test expressions located


@dataclass
class WorldSpec:
    seed: int = 0
    chunk_images: int = 2048
    chunk_steps: int = 200
    # [from_fraction, min_objects, max_objects] stages
    curriculum: list[list[float]] = field(
        default_factory=lambda: [[0.0, 1, 1], [0.05, 1, 2], [0.15, 1, 3], [0.3, 1, 4]]
    )
    qa_per_image: int = 8
    first_scene: int = (
        0  # index of the first training scene drawn (a later stage draws past the earlier ones)
    )

    def objects_at(self, fraction: float) -> tuple[int, int]:
        stage = [s for s in sorted(self.curriculum) if s[0] <= fraction] or [sorted(self.curriculum)[0]]
        return int(stage[-1][1]), int(stage[-1][2])


@dataclass
class PretrainConfig:
    steps: int = 300
    batch_size: int = 32  # examples per step over all tasks
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    tasks: list[str] = field(default_factory=lambda: list(DATASET_TASKS))
    # dynamic: share proportional to the loss summed over the last `window` steps (Piergiovanni et al., K=100)
    mixing: str = "dynamic"
    window: int = 100
    min_per_task: int = 4  # the paper's floor: every task gets at least this many samples per batch
    attention: str = "prefix"  # the attention rule (models.attention): prefix, image or causal
    # alttext: captions only; filtered: + the kept QA and dense captions; unfiltered: + the rejected QA pairs
    data: str = "filtered"
    # dataset: a run's published dataset (make pretrain); world: fresh sample-world scenes (jade base)
    source: str = "dataset"
    world: WorldSpec | None = None  # the world source's settings
    probe_every: int = 0  # world source: score the held-out probe every this many steps (0: at the end only)
    probe_images: int = 100
    arch: Architecture = field(
        default_factory=lambda: Architecture(vision_hidden=64, text_hidden=128, vocab_size=800)
    )
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
    # a folder of downstream benchmarks (sampleworld.benchmarks' layout): retrieval, captioning and the region
    # task are scored there, against clean references; None: retrieval and captioning on the held-out images
    # against their alt-text (the only references a dataset without benchmarks has)
    benchmarks: str | None = None
    downstream: Downstream = field(default_factory=Downstream)
    # a checkpoint (save_pretrained folder) whose vision tower initialises the model: one shared start for every
    # setting of a comparison, as JADE starts from a pretrained image encoder; None: from scratch
    init_vision: str | None = None
    # ITC pairs per step outside the task mixing (ALBEF and BLIP compute the contrastive loss on every batch);
    # 0: ITC is one of the mixed tasks
    itc_batch: int = 0
    itc_texts: list[str] = field(default_factory=lambda: ["alttext"])
    # one forward pass a step for every generative task's examples together, each task's loss still its own
    # (`base.merged_lm_losses`): about 1.4x faster steps here; off by default, so that a recipe run before
    # (the shipped base) gives the same weights again
    merge_lm_tasks: bool = False

    def __post_init__(self) -> None:
        for name, allowed in (
            ("mixing", STRATEGIES),
            ("attention", RULES),
            ("data", DATA_VARIANTS),
            ("source", SOURCES),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"pretrain.{name}: {getattr(self, name)!r} is not one of {allowed}")
        for t in self.itc_texts:
            if t not in ITC_TEXTS:
                raise ValueError(f"pretrain.itc_texts: {t!r} is not one of {ITC_TEXTS}")
        if not self.itc_texts:
            raise ValueError("pretrain.itc_texts: name at least one text source")
        if self.itc_batch < 0:
            raise ValueError("pretrain.itc_batch: must be >= 0")
        for t in self.tasks:
            if t not in TASKS:
                raise ValueError(f"pretrain.tasks: unknown task {t!r} (known: {', '.join(TASKS)})")
        if not self.tasks:
            raise ValueError("pretrain.tasks: name at least one task")
        mixed = [t for t in self.tasks if not (self.itc_batch and t == "itc")]
        if self.mixing != "round_robin" and self.min_per_task * len(mixed) > self.batch_size:
            raise ValueError(
                f"pretrain.batch_size: {self.batch_size} is below min_per_task x tasks "
                f"({self.min_per_task} x {len(mixed)})"
            )
        for name in ("steps", "batch_size", "grad_accum", "window"):
            if getattr(self, name) < 1:
                raise ValueError(f"pretrain.{name}: must be at least 1")
        for name in ("caption_steps", "region_steps", "batch_size", "caption_images", "region_refs"):
            if getattr(self.downstream, name) < 1:
                raise ValueError(f"pretrain.downstream.{name}: must be at least 1")

    @classmethod
    def from_dict(cls, d: dict, at: str = "pretrain") -> PretrainConfig:
        """Typed and validated (errors name the key); accepts what `to_dict` wrote."""
        if "mask" in d:  # checkpoints written before the attention rules were named
            d = {("attention" if k == "mask" else k): v for k, v in d.items()}
        return build(cls, d, at)

    def to_dict(self) -> dict:
        return asdict(self)

    def training_dict(self) -> dict:
        """The settings that make the checkpoint: everything but the evaluation's (`EVAL_FIELDS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in EVAL_FIELDS}

    def with_evaluation(self, other: PretrainConfig) -> PretrainConfig:
        """These training settings with ``other``'s evaluation settings: a checkpoint re-evaluated under a
        new evaluation budget keeps what it was trained with."""
        return replace(self, **{f: getattr(other, f) for f in EVAL_FIELDS})


# the settings that only the evaluation reads: changing them re-evaluates a checkpoint, never retrains it
EVAL_FIELDS = ("vqa_steps", "vqa_batch_size", "vqa_lr", "vqa_eval_questions", "benchmarks", "downstream")
