"""The architecture of a from-scratch model and the hyperparameters of a fine-tuning run: typed settings that
manifests, training jobs and checkpoints' records share (no torch here: loading a manifest stays cheap)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from jade.typed import ranged

__all__ = [
    "Architecture",
    "Training",
]


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
class Training:
    steps: int = ranged(600, ge=1)
    batch_size: int = ranged(32, ge=1)
    lr: float = ranged(1e-3, gt=0)
    weight_decay: float = ranged(0.01, ge=0)
    warmup_steps: int = ranged(50, ge=0)
    max_examples: int | None = ranged(None, ge=1)  # cap on training examples (None: all)
