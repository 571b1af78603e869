"""Captioning: generate the image's alt-text from the image (LM loss on the caption)."""

from __future__ import annotations

from jade.models.pretrain.base import PretrainData, TaskContext

PROMPT = "caption en"


class Captioning:
    name = "caption"

    def examples(self, data: PretrainData) -> list[tuple[int, str]]:
        return data.captioned()

    def loss(self, ctx: TaskContext, examples: list[tuple[int, str]]):
        batch = ctx.batch([i for i, _ in examples], [PROMPT] * len(examples), [c for _, c in examples])
        return ctx.model.lm_loss(batch)
