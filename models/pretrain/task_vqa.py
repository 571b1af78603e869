"""VQA: answer a question about the image (the dataset's kept QA pairs; LM loss on the answer)."""

from __future__ import annotations

from jade.models.pretrain.base import LMTask, PretrainData, TaskContext
from jade.models.tasks import answer_prompt


class VQA(LMTask):
    name = "vqa"

    def examples(self, data: PretrainData) -> list[tuple[int, str, str]]:
        return [
            (i, qa["question"], qa["answer"])
            for i, pairs in enumerate(data.qa)
            for qa in pairs
            if qa.get("question") and qa.get("answer")
        ]

    def lm_examples(self, ctx: TaskContext, examples: list[tuple[int, str, str]]) -> tuple:
        return (
            [i for i, _, _ in examples],
            [answer_prompt(q) for _, q, _ in examples],
            [a for _, _, a in examples],
        )
