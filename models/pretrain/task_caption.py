"""Captioning: generate the image's alt-text from the image (LM loss on the caption)."""

from __future__ import annotations

from jade.models.pretrain.base import PretrainData, TaskContext
from jade.models.pretrain.model import lm_batch

PROMPT = "caption en"


class Captioning:
    name = "caption"

    def examples(self, data: PretrainData) -> list[tuple[int, str]]:
        return data.captioned()

    def loss(self, ctx: TaskContext, examples: list[tuple[int, str]]):
        batch = lm_batch(ctx.processor, [ctx.data.images[i] for i, _ in examples], [PROMPT] * len(examples),
                         [c for _, c in examples], ctx.mask, ctx.device)  # fmt: skip
        return ctx.model.lm_loss(batch)
