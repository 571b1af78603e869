"""What every pretraining task sees: the data it draws examples from and the context it computes a loss in.

A task is a small class with a ``name``, ``examples(data)`` (its pool: plain tuples that point at images by
index) and ``loss(ctx, examples)`` (it builds its own batch and returns a scalar loss). Adding a task is one
module with such a class, plus its name in `tasks.TASKS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Vocabulary:
    """The words of the world the object-aware tasks (objects, locate, detect, relate, binding, ...) ask about,
    passed in with the data by the source that knows the world: the pretrainer itself knows no world."""

    colors: tuple[str, ...]
    shapes: tuple[str, ...]
    sizes: tuple[str, ...]
    rows: tuple[str, ...]  # top to bottom
    cols: tuple[str, ...]  # left to right
    positions: dict[str, tuple[str, str]]  # a place's name -> (its row, its column)
    # the names of the four relations, in this order: left of, right of, above, below
    relations: tuple[str, str, str, str]

    def relation_axis(self, relation: str) -> str:
        """``h`` for left of / right of, ``v`` for above / below."""
        return "h" if self.relations.index(relation) < 2 else "v"


@dataclass
class PretrainData:
    """Pretraining images (PIL, at the model's input size) and their texts, aligned by index."""

    keys: list[str]
    images: list
    captions: list[str]  # the original alt-text
    qa: list[list[dict]] = field(default_factory=list)  # per image: {question, answer, ...}
    regions: list[list[dict]] = field(default_factory=list)  # per image: {bbox, caption, ...}
    # per image, in reading order: {bbox, color, shape, size, position} (the world source only: true objects)
    objects: list[list[dict]] = field(default_factory=list)
    # every published text (kept QA and regions even in the alt-text-only variant): the tokenizer's corpus,
    # so that the data variants share one vocabulary
    vocab_texts: list[str] = field(default_factory=list)
    vocab: Vocabulary | None = None  # the world's words (world sources; the object-aware tasks need them)

    def captioned(self) -> list[tuple[int, str]]:
        """(image index, alt-text) of every image that has one: the examples of the alt-text tasks."""
        return [(i, c) for i, c in enumerate(self.captions) if c]

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class TaskContext:
    model: object  # PretrainModel (unwrapped)
    processor: object
    data: PretrainData
    attention: str
    device: str
    rng: np.random.Generator

    def batch(self, image_ids: list[int], prefixes: list[str], suffixes: list[str]) -> dict:
        """Model inputs with labels for (image index, prefix, suffix) examples, under the run's attention rule."""
        from jade.models.train import example_batch

        images = [self.data.images[i] for i in image_ids]
        return example_batch(self.processor, images, prefixes, suffixes, self.device, self.attention)


class LMTask:
    """A generative task: ``lm_examples`` turns its examples into (image indices, prompts, targets); the loss is
    the LM loss on the targets. The loop may put several such tasks' examples into one forward pass
    (`merged_lm_losses`): at this model size a pass costs nearly as much for 8 examples as for 32."""

    name = "lm"

    def lm_examples(self, ctx: TaskContext, examples: list) -> tuple[list[int], list[str], list[str]]:
        raise NotImplementedError

    def loss(self, ctx: TaskContext, examples: list):
        return ctx.model.lm_loss(ctx.batch(*self.lm_examples(ctx, examples)))


def merged_lm_losses(ctx: TaskContext, parts: list[tuple[LMTask, list]]) -> dict:
    """Each task's LM loss (its mean over its own target tokens, as `LMTask.loss`), from one forward pass over
    every task's examples together."""
    import torch

    ids, prefixes, suffixes, owner = [], [], [], []
    for k, (task, examples) in enumerate(parts):
        i, p, s = task.lm_examples(ctx, examples)
        ids += i
        prefixes += p
        suffixes += s
        owner += [k] * len(i)
    batch = ctx.batch(ids, prefixes, suffixes)
    labels = batch["labels"]
    keep = (labels[:, 1:] != -100).any(0).nonzero()[:, 0]  # position t predicts token t + 1
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = ctx.model.lm(**inputs, logits_to_keep=keep).logits
    target = labels[:, keep + 1]
    tok = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1).float(), target.flatten(), ignore_index=-100, reduction="none"
    ).view(target.shape)
    valid = (target != -100).float()
    rows = torch.tensor(owner, device=tok.device)
    out = {}
    for k, (task, _) in enumerate(parts):
        mine = (rows == k).float()[:, None] * valid
        out[task.name] = (tok * mine).sum() / mine.sum().clamp(min=1)
    return out
