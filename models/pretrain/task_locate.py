"""Locate a described object: ``locate <description>`` -> its box as four location tokens, or ``none`` when no
object fits the description. Descriptions name an object by whatever singles it out (its shape, its colour,
both, or size, colour and shape), so the model must find an object by what it is, not where it is (world
source only)."""

from __future__ import annotations

import itertools

from jade.models.pretrain.base import LMTask, PretrainData, TaskContext, Vocabulary
from jade.models.tasks import box_to_tokens

PROMPT = "locate {description}"
NONE = "none"
KEYS = (("shape",), ("color",), ("color", "shape"), ("size", "color", "shape"))


def describe(values: dict, keys: tuple[str, ...]) -> str:
    if keys == ("color",):
        return f"{values['color']} object"
    return " ".join(values[k] for k in keys)


def descriptions(objects: list[dict], vocab: Vocabulary) -> list[tuple[str, str]]:
    """(description, target) for every object and every way of naming it that fits it alone, and for
    descriptions that fit no object (target ``none``)."""
    out = []
    for o in objects:
        for keys in KEYS:
            if sum(all(p[k] == o[k] for k in keys) for p in objects) == 1:
                out.append((describe(o, keys), box_to_tokens(o["bbox"])))
    for keys in KEYS[:3]:
        for combo in itertools.product(
            *({"color": sorted(vocab.colors), "shape": vocab.shapes, "size": vocab.sizes}[k] for k in keys)
        ):
            values = dict(zip(keys, combo, strict=True))
            if not any(all(p[k] == values[k] for k in keys) for p in objects):
                out.append((describe(values, keys), NONE))
    return out


class Locate(LMTask):
    name = "locate"

    def examples(self, data: PretrainData) -> list[tuple[int, str, str]]:
        out = []
        for i, objs in enumerate(data.objects):
            found = descriptions(objs, data.vocab)
            present = [d for d in found if d[1] != NONE]
            absent = [d for d in found if d[1] == NONE]
            # every present description, and about a third as many absent ones (deterministic per image)
            out += [(i, d, t) for d, t in present]
            out += [(i, d, t) for d, t in absent[:: max(1, 3 * len(absent) // max(1, len(present)))]]
        return out

    def lm_examples(self, ctx: TaskContext, examples: list[tuple[int, str, str]]) -> tuple:
        return (
            [i for i, _, _ in examples],
            [PROMPT.format(description=d) for _, d, _ in examples],
            [t for _, _, t in examples],
        )
