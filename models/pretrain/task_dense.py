"""Dense captioning: describe the region inside a box (the box as PaliGemma location tokens in the prompt)."""

from __future__ import annotations

from jade.models.pretrain.base import LMTask, PretrainData, TaskContext
from jade.models.tasks import box_to_tokens

PROMPT = "describe {box}"


class DenseCaption(LMTask):
    name = "dense"

    def examples(self, data: PretrainData) -> list[tuple[int, tuple, str]]:
        return [
            (i, tuple(r["bbox"]), r["caption"])
            for i, regs in enumerate(data.regions)
            for r in regs
            if r.get("caption")
        ]

    def lm_examples(self, ctx: TaskContext, examples: list[tuple[int, tuple, str]]) -> tuple:
        return (
            [i for i, _, _ in examples],
            [PROMPT.format(box=box_to_tokens(b)) for _, b, _ in examples],
            [c for _, _, c in examples],
        )
