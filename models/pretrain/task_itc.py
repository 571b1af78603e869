"""Image-text contrastive (CLIP-style): pooled image tokens vs the decoder's text-only state, symmetric
InfoNCE over the batch. Pairs in one batch come from distinct images."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jade.models.pretrain.base import PretrainData, TaskContext
from jade.models.pretrain.model import text_batch


def embed_pairs(ctx: TaskContext, idx: list[int], texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = ctx.processor.image_processor([ctx.data.images[i] for i in idx], return_tensors="pt")
    img = ctx.model.image_embed(pixels["pixel_values"].to(ctx.device))
    txt = ctx.model.text_embed(**text_batch(ctx.processor.tokenizer, texts, ctx.device))
    return img, txt


def distinct(examples: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Drop repeated images or texts (they would be false negatives)."""
    seen_i, seen_t, out = set(), set(), []
    for i, t in examples:
        if i not in seen_i and t not in seen_t:
            seen_i.add(i), seen_t.add(t), out.append((i, t))
    return out


class ITC:
    name = "itc"

    def examples(self, data: PretrainData) -> list[tuple[int, str]]:
        return data.captioned()

    def loss(self, ctx: TaskContext, examples: list[tuple[int, str]]):
        ex = distinct(examples)
        img, txt = embed_pairs(ctx, [i for i, _ in ex], [t for _, t in ex])
        logits = ctx.model.logit_scale.exp().clamp(max=100) * img @ txt.T
        target = torch.arange(len(ex), device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
