"""Image-text contrastive (CLIP-style): pooled image tokens vs the decoder's text-only state, symmetric
InfoNCE over the batch. Pairs in one batch come from distinct images.

What an image is paired with (`texts`): its alt-text (``alttext``, the default), and, as *CLIP with Quality
Captions* trains on synthetic captions beside the web ones, its dense captions joined into one caption of the
whole image (``regions``: `region_caption`). With both, each image has up to two pairs in the pool and a
batch draws from all of them."""

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


def contrastive_loss(model, img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE between row-aligned image and text embeddings, under the model's learned temperature."""
    logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
    target = torch.arange(len(img), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def distinct(examples: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Drop repeated images or texts (they would be false negatives)."""
    seen_i, seen_t, out = set(), set(), []
    for i, t in examples:
        if i not in seen_i and t not in seen_t:
            seen_i.add(i), seen_t.add(t), out.append((i, t))
    return out


def region_caption(regions: list[dict]) -> str:
    """An image's dense captions as one caption of the image: in reading order of their boxes (by the row of
    the box centre in thirds, then its x), joined as a list: ``a red circle, a blue square and a triangle``."""

    def order(r: dict) -> tuple:
        x0, y0, x1, y1 = r["bbox"]
        return min(2, int(3 * (y0 + y1) / 2)), (x0 + x1) / 2

    parts = [" ".join(r["caption"].split()) for r in sorted(regions, key=order) if r.get("caption")]
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


class ITC:
    name = "itc"

    def __init__(self, texts: tuple[str, ...] | list[str] = ("alttext",)):
        self.texts = tuple(texts)

    def examples(self, data: PretrainData) -> list[tuple[int, str]]:
        out = data.captioned() if "alttext" in self.texts else []
        if "regions" in self.texts:
            out += [(i, t) for i, regs in enumerate(data.regions) if (t := region_caption(regs))]
        return out

    def loss(self, ctx: TaskContext, examples: list[tuple[int, str]]):
        ex = distinct(examples)
        img, txt = embed_pairs(ctx, [i for i, _ in ex], [t for _, t in ex])
        return contrastive_loss(ctx.model, img, txt)
