"""The architecture of a from-scratch model and the hyperparameters of a fine-tuning run: typed settings that
manifests, training jobs and checkpoints' records share (no torch here: loading a manifest stays cheap)."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class Architecture:
    """A from-scratch PaliGemma (SigLIP vision tower + Gemma decoder); used when `base` is not set."""

    image_size: int = 48
    patch_size: int = 16
    vision_hidden: int = 128
    vision_layers: int = 2
    text_hidden: int = 192
    text_layers: int = 2
    head_dim: int = 16
    kv_heads: int = 1  # key/value heads of the decoder (1: multi-query, as Gemma-2B)
    vocab_size: int = 1000  # of the tokenizer trained offline, before PaliGemma's 1024 loc + 128 seg tokens

    @classmethod
    def from_dict(cls, d: dict) -> Architecture:
        """From a recorded architecture (fields added since default: an old record builds the same model)."""
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in fields(cls)}})


@dataclass
class Training:
    steps: int = 600
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    max_examples: int | None = None  # cap on training examples (None: all)
