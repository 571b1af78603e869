"""The memory plan of a fine-tuning run: peak memory per GPU, estimated from the architecture alone.

The model is built on the meta device (no memory, no weights) to count parameters; freezing and LoRA decide
which of them train. Activations come from per-layer formulas of what PyTorch saves for backward in
transformers' SigLIP encoder layer and Gemma decoder layer, per token (measured with
``torch.autograd.graph.saved_tensors_hooks`` and checked by tests/models/test_memplan.py against the real
layers, in fp32 and under bf16 autocast). Every function here is pure arithmetic over those counts.

Peak = the larger of the two moments of a step:
- forward/backward: weights + optimizer moments + (accumulated gradients when micro-batching, else the LM
  head's gradient, made first) + saved activations + the loss's transients;
- optimizer step: weights + gradients + moments + the step's temporaries (CUDA's foreach AdamW: one
  fp32 copy of the trainable parameters; CPU: none);
- on a CPU also building the model: every parameter in fp32 before the options apply, plus the initialiser's
  copy of the largest weight (on a GPU the model arrives with its options applied).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from jade.models import tuning
from jade.models.specs import LoRA

__all__ = [
    "Counts",
    "FIT_FRACTION",
    "GIB",
    "PALIGEMMA_3B_224",
    "Plan",
    "Settings",
    "Workload",
    "activation_bytes",
    "counts",
    "meta_model",
    "paligemma_3b_224",
    "plan",
    "text_layer_bytes",
    "vision_layer_bytes",
]

GIB = 2**30
FIT_FRACTION = 0.92  # of a GPU's memory a plan may use: the rest for the CUDA context and fragmentation
# google/paligemma-3b-{pt,mix,ft}-224 as published (bench/gpu.py builds the same sizes): transformers'
# PaliGemmaConfig defaults, except the vision MLP (4304, not 4096) and the vocabulary (257216, not 257152)
PALIGEMMA_3B_224 = {
    "vision": {"intermediate_size": 4304, "projection_dim": 2048},
    "text": {"vocab_size": 257216},
}


def paligemma_3b_224():
    """The published PaliGemma-3B-224 architecture, as a transformers config (no download)."""
    from transformers import PaliGemmaConfig

    d = PaliGemmaConfig().to_dict()
    d["vision_config"].update(PALIGEMMA_3B_224["vision"])
    d["text_config"].update(PALIGEMMA_3B_224["text"])
    d["vocab_size"] = PALIGEMMA_3B_224["text"]["vocab_size"]
    return PaliGemmaConfig.from_dict(d)


@dataclass(frozen=True)
class Workload:
    """What one training step computes on: examples per pass and per step, tokens per example."""

    micro_batch: int
    batch_size: int
    text_tokens: int  # prompt + target tokens per example (after the image tokens)
    target_tokens: int  # tokens the loss predicts per example (the LM head's positions)


@dataclass(frozen=True)
class Settings:
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    freeze: tuple[str, ...] = ()
    lora: LoRA | None = None
    strategy: str = "ddp"
    workers: int = 1
    device: str = "cuda"  # the optimizer step's temporaries differ (CUDA: foreach AdamW)


@dataclass
class Counts:
    """Parameter counts of a model under freezing / LoRA (from the meta device)."""

    params: int
    trainable: int
    frozen: int
    cast: int  # trainable parameters of Linear/Conv layers: copied to bf16 by autocast in the forward pass
    head: int  # trainable parameters of the LM head (its gradient is made first in backward)
    largest_unit: int  # parameters of the largest transformer layer (FSDP gathers one at a time)
    largest_tensor: (
        int  # parameters of the largest single weight (building a model initialises it via a copy)
    )
    vision_trains: bool  # anything in the vision tower trains (else it saves no activations)
    frozen_modules: list[str] = field(default_factory=list)


@dataclass
class Plan:
    params: int
    trainable_params: int
    weights: float  # bytes
    grads: float
    optimizer: float
    activations: float
    peak: float
    fits: bool | None = None

    def to_json(self) -> dict:
        gib = {k: round(getattr(self, k) / GIB, 2) for k in ("weights", "grads", "optimizer", "activations")}
        return {
            "params": self.params,
            "trainable_params": self.trainable_params,
            **{f"{k}_gib": v for k, v in gib.items()},
            "peak_gib": round(self.peak / GIB, 2),
            "fits": self.fits,
        }


def meta_model(config):
    """The architecture without memory: every parameter on the meta device."""
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config)


def counts(model, freeze: tuple[str, ...] = (), lora: LoRA | None = None, at: str = "train") -> Counts:
    """Parameters, and which of them train, of ``model`` (any device) under ``freeze`` and ``lora``."""
    frozen_mods = tuning.frozen_names(model, freeze, f"{at}.freeze") if freeze else []
    frozen_ids = {id(p) for q in frozen_mods for p in model.get_submodule(q).parameters()}
    named = dict(model.named_parameters())  # tied parameters once
    params = sum(p.numel() for p in named.values())
    linear = (torch.nn.Linear, torch.nn.Conv2d)
    if lora is not None:  # the base is frozen; each target gets r x (in + out) adapter weights
        targets = tuning.lora_targets(model, lora, frozen_mods, f"{at}.lora")
        mods = [model.get_submodule(q) for q in targets]
        trainable = sum(lora.r * (m.in_features + m.out_features) for m in mods)
        cast, head, vision = trainable, 0, any(".vision_tower." in f".{q}." for q in targets)
    else:
        train_ids = {id(p) for p in named.values() if id(p) not in frozen_ids}
        trainable = sum(p.numel() for p in named.values() if id(p) in train_ids)
        seen: set[int] = set()
        cast = 0
        for m in model.modules():
            if isinstance(m, linear):
                for p in m.parameters(recurse=False):
                    if id(p) in train_ids and id(p) not in seen:
                        seen.add(id(p))
                        cast += p.numel()
        lm_head = getattr(model, "lm_head", None)
        head = sum(p.numel() for p in lm_head.parameters() if id(p) in train_ids) if lm_head else 0
        tower = _vision_tower(model)
        vision = tower is not None and any(id(p) in train_ids for p in tower.parameters())
    classes = tuple(tuning.layer_classes(model))
    units = [
        sum(p.numel() for p in m.parameters()) for m in model.modules() if classes and isinstance(m, classes)
    ]
    return Counts(
        params=params,
        trainable=trainable,
        frozen=params - (trainable if lora is None else 0),
        cast=cast,
        head=head,
        largest_unit=max(units, default=params),
        largest_tensor=max((p.numel() for p in named.values()), default=0),
        vision_trains=vision,
        frozen_modules=frozen_mods,
    )


def _vision_tower(model):
    for q, m in model.named_modules():
        if q.endswith("vision_tower"):
            return m
    return None


# ---------------------------------------------------------------------------------------------- activations
def vision_layer_bytes(v, bf16: bool) -> float:
    """Bytes a SigLIP encoder layer saves for backward, per token (fp32; bf16 autocast)."""
    h, m, a = v.hidden_size, v.intermediate_size, v.num_attention_heads
    return 24 * h + 4 * m + 4 * a + 16 if bf16 else 4 * (8 * h + 2 * m + a + 4)


def text_layer_bytes(t, seq: int, bf16: bool) -> float:
    """Bytes a Gemma decoder layer saves for backward, per token: norms, q/k/v/out, the attention's
    log-sum-exp and its mask row, the gated MLP (fp32; bf16 autocast)."""
    h, m, a, k = t.hidden_size, t.intermediate_size, t.num_attention_heads, t.num_key_value_heads
    d = getattr(t, "head_dim", None) or h // a
    if bf16:
        return 26 * h + 8 * m + 8 * a * d + 4 * a + 2 * seq + 8
    kv = k * d if k in (1, a) else a * d  # key/value heads are repeated (materialized) for 1 < k < a
    return 4 * (6 * h + 2 * a * d + 2 * kv + 4 * m + a + seq + 2)


def activation_bytes(config, w: Workload, s: Settings, c: Counts) -> tuple[float, float]:
    """(saved activations of one micro-batch, transients on top of them around the loss) in bytes."""
    v, t = config.vision_config, config.text_config
    bf16 = s.precision == "bf16"
    b, image = w.micro_batch, (v.image_size // v.patch_size) ** 2
    seq = image + w.text_tokens
    vis_layer = vision_layer_bytes(v, bf16) * b * image
    txt_layer = text_layer_bytes(t, seq, bf16) * b * seq
    if s.gradient_checkpointing:  # each layer keeps its (fp32) input; one layer is recomputed at a time
        vis = v.num_hidden_layers * 4 * v.hidden_size * b * image + vis_layer
        txt = t.num_hidden_layers * 4 * t.hidden_size * b * seq + txt_layer
    else:
        vis = v.num_hidden_layers * vis_layer
        txt = t.num_hidden_layers * txt_layer
    if not c.vision_trains:
        vis = 0.0  # nothing in the tower needs a gradient: it saves nothing
    projector = 4 * v.hidden_size * b * image
    vocab = t.vocab_size
    # the final norm over the sequence, the LM head's input and its log-softmax at the target positions
    ends = 4 * 3 * t.hidden_size * b * seq + 4 * t.hidden_size * b * w.target_tokens
    logits = 4 * b * w.target_tokens * vocab
    casts = 2 * c.cast if bf16 else 0  # autocast's bf16 copies of the trainable weights, held by the forward
    saved = vis + txt + projector + ends + logits + casts
    transient = 2 * logits  # the loss's gradients over the vocabulary
    return saved, transient


# ---------------------------------------------------------------------------------------------- the plan
def plan(config, w: Workload, s: Settings, c: Counts, gpu_bytes: float | None = None) -> Plan:
    """Peak memory per GPU (bytes) of one training step of ``config`` under ``s``; ``fits`` when a GPU's
    memory is given."""
    bf16 = s.precision == "bf16"
    n = s.workers if s.strategy == "fsdp" and s.workers > 1 else 1
    frozen_bytes = c.frozen * (2 if bf16 else 4)
    weights = (4 * c.trainable + frozen_bytes) / n
    grads = 4 * c.trainable / n
    optimizer = 8 * c.trainable / n
    if n > 1:  # FSDP gathers a layer (and prefetches the next); its unsharded gradient lives while reduced
        weights += 2 * c.largest_unit * (2 if bf16 else 4)
        grads += 4 * c.largest_unit
    elif s.workers > 1:  # DDP's gradient buckets: a second copy of the gradients
        grads *= 2
    saved, transient = activation_bytes(config, w, s, c)
    accumulating = w.micro_batch < w.batch_size
    early = grads if accumulating else 4 * c.head / n
    step_temp = 4 * c.trainable / n if s.device == "cuda" else 0.0
    # on a CPU the model is also built (or loaded) in fp32 in the same memory, before its options apply; on a
    # GPU it arrives with them applied (models.train moves it after)
    build = 4 * (c.params + c.largest_tensor) if s.device == "cpu" else 0.0
    peak = max(
        weights + optimizer + early + saved + transient, weights + grads + optimizer + step_temp, build
    )
    fits = None if gpu_bytes is None else peak <= FIT_FRACTION * gpu_bytes
    return Plan(c.params, c.trainable, weights, grads, optimizer, saved + transient, peak, fits)
