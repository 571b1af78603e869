"""The architecture of a from-scratch model and the hyperparameters of a fine-tuning run: typed settings that
manifests, training jobs and checkpoints' records share (no torch here: loading a manifest stays cheap)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from jade.typed import ConfigError, ranged, since, validate_choice

__all__ = [
    "Architecture",
    "LoRA",
    "PRECISIONS",
    "Training",
    "is_default_training",
]

PRECISIONS = ("fp32", "bf16")
# the memory options (`Training`, docs/cluster.md) came after runs were made without them: `since` leaves a
# field out of the fingerprints while it holds its default, so a run with the defaults re-runs nothing
OPTIONS_SINCE = "0.2"


@dataclass
class Architecture:
    """A from-scratch PaliGemma (SigLIP vision tower + Gemma decoder); used when `base` is not set."""

    image_size: int = ranged(48, ge=1)
    patch_size: int = ranged(16, ge=1)
    vision_hidden: int = ranged(128, ge=1)
    vision_layers: int = ranged(2, ge=1)
    text_hidden: int = ranged(192, ge=1)
    text_layers: int = ranged(2, ge=1)
    head_dim: int = ranged(16, ge=1)
    kv_heads: int = ranged(1, ge=1)  # key/value heads of the decoder (1: multi-query, as Gemma-2B)
    # of the tokenizer trained offline, before PaliGemma's 1024 loc + 128 seg tokens
    vocab_size: int = ranged(1000, ge=1)

    @classmethod
    def from_dict(cls, d: dict) -> Architecture:
        """From a recorded architecture (fields added since default: an old record builds the same model)."""
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields(cls)}})


@dataclass
class LoRA:
    """Low-rank adapters (peft) on the ``targets`` linear layers (module names or name suffixes, e.g. q_proj),
    except inside frozen modules; merged into the weights when the checkpoint is saved (a plain checkpoint)."""

    r: int = ranged(16, ge=1)
    alpha: float = ranged(32.0, gt=0)  # the adapters' output is scaled by alpha / r
    dropout: float = ranged(0.0, ge=0, lt=1)
    targets: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )

    def validate(self, at: str) -> None:
        if not self.targets or not all(self.targets):
            raise ConfigError(f"{at}.targets: name at least one module (e.g. q_proj)")


@dataclass
class Training:
    steps: int = ranged(600, ge=1)
    batch_size: int = ranged(32, ge=1)
    lr: float = ranged(1e-3, gt=0)
    weight_decay: float = ranged(0.01, ge=0)
    warmup_steps: int = ranged(50, ge=0)
    max_examples: int | None = ranged(None, ge=1)  # cap on training examples (None: all)
    # Memory options (docs/cluster.md, `jade plan`); the defaults are the loop as it was before they existed.
    # fp32: everything in fp32. bf16: forward and loss under bf16 autocast; trainable weights, their gradients
    # and AdamW's moments stay fp32 (master weights), frozen weights are stored in bf16.
    precision: str = since(OPTIONS_SINCE, "fp32")
    # examples per forward/backward; gradients accumulate up to batch_size (None: the whole batch)
    micro_batch: int | None = ranged(None, ge=1, since=OPTIONS_SINCE)
    # keep each layer's input only; recompute the layer in backward
    gradient_checkpointing: bool = since(OPTIONS_SINCE, False)
    # modules never updated: dotted names or name suffixes (vision_tower, multi_modal_projector)
    freeze: list[str] = since(OPTIONS_SINCE, default_factory=list)
    # low-rank adapters (only they train), merged into the saved checkpoint
    lora: LoRA | None = since(OPTIONS_SINCE, None)

    def validate(self, at: str) -> None:
        """The checks that span fields; errors name the dotted key (``models.generator.train.micro_batch``)."""
        validate_choice(self.precision, PRECISIONS, f"{at}.precision")
        if self.micro_batch is not None and self.micro_batch > self.batch_size:
            raise ConfigError(
                f"{at}.micro_batch: must be at most batch_size ({self.batch_size}), got {self.micro_batch}"
            )
        for i, name in enumerate(self.freeze):
            if not name.strip("."):
                raise ConfigError(f"{at}.freeze[{i}]: a module name (e.g. vision_tower), got {name!r}")

    def micro(self) -> int:
        """Examples per forward/backward pass."""
        return min(self.micro_batch or self.batch_size, self.batch_size)

    def options(self) -> dict:
        """The memory options as recorded in jade_model.json (``training``) and row provenance."""
        d = {k: v for k, v in asdict(self).items() if k in option_defaults()}
        return {**d, "micro_batch": self.micro(), "batch_size": self.batch_size}


def option_defaults() -> dict:
    """The memory options at the values that keep the loop as it was before they existed."""
    t = Training()
    return {f.name: getattr(t, f.name) for f in fields(Training) if f.metadata.get("since") == OPTIONS_SINCE}


def is_default_training(record: dict) -> bool:
    """A checkpoint's training record (jade_model.json ``training``) says it was trained the default way (as
    before the memory options existed): an empty or missing record does too."""
    defaults = option_defaults()
    options = {k: record.get(k, v) for k, v in defaults.items()}
    if options["micro_batch"] == record.get("batch_size"):  # the whole batch in one pass
        options["micro_batch"] = None
    return options == defaults and record.get("strategy", "ddp") == "ddp"
