"""Caption completion: given the image and the first part of its alt-text, generate the rest."""

from __future__ import annotations

from jade.models.pretrain.base import LMTask, PretrainData, TaskContext

PROMPT = "complete {start}"


class Completion(LMTask):
    name = "completion"

    def examples(self, data: PretrainData) -> list[tuple[int, str]]:
        return [(i, c) for i, c in enumerate(data.captions) if len(c.split()) >= 2]

    def lm_examples(self, ctx: TaskContext, examples: list[tuple[int, str]]) -> tuple:
        prefixes, suffixes = [], []
        for _, caption in examples:
            words = caption.split()
            cut = int(ctx.rng.integers(1, len(words)))  # at least one word on each side
            prefixes.append(PROMPT.format(start=" ".join(words[:cut])))
            suffixes.append(" ".join(words[cut:]))
        return ([i for i, _ in examples], prefixes, suffixes)
