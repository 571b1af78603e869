"""Captioning: generate the image's alt-text from the image (LM loss on the caption)."""

from __future__ import annotations

from jade.models.pretrain.base import LMTask, PretrainData, TaskContext

PROMPT = "caption en"


class Captioning(LMTask):
    name = "caption"

    def examples(self, data: PretrainData) -> list[tuple[int, str]]:
        return data.captioned()

    def lm_examples(self, ctx: TaskContext, examples: list[tuple[int, str]]) -> tuple:
        return ([i for i, _ in examples], [PROMPT] * len(examples), [c for _, c in examples])
