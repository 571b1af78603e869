"""Detect the objects a description fits: ``detect <description>`` -> the box of every object it fits, in
reading order, as four location tokens each, separated by " ; " (or ``none``). PaliGemma's detection prompt,
with descriptions by shape ("circle"), colour ("red object"), both, or size and shape. Every shape of the world
is asked of every image, present or not, so the model learns to find objects by what they are, count them and
tell when there is none: the retrieval that questions about "the circle" need (world source only)."""

from __future__ import annotations

from jade.models.pretrain.base import LMTask, PretrainData, TaskContext, Vocabulary
from jade.models.pretrain.task_locate import NONE, describe
from jade.models.tasks import box_to_tokens

PROMPT = "detect {description}"
KEYS = (("color", "shape"), ("size", "shape"), ("color",))


def detections(objects: list[dict], vocab: Vocabulary) -> list[tuple[str, str]]:
    """(description, target) for every shape, and for the colours, colour-shapes and size-shapes present, plus
    as many absent colour-shapes as there are present ones."""

    def target(keys: tuple[str, ...], values: dict) -> str:
        hits = [o for o in objects if all(o[k] == values[k] for k in keys)]
        return " ; ".join(box_to_tokens(o["bbox"]) for o in hits) or NONE

    out = [(s, target(("shape",), {"shape": s})) for s in vocab.shapes]
    for keys in KEYS:
        seen = sorted({tuple(o[k] for k in keys) for o in objects})
        out += [
            (describe(dict(zip(keys, v, strict=True)), keys), target(keys, dict(zip(keys, v, strict=True))))
            for v in seen
        ]
    present = {(o["color"], o["shape"]) for o in objects}
    absent = [(c, s) for c in sorted(vocab.colors) for s in vocab.shapes if (c, s) not in present]
    step = max(1, len(absent) // max(1, len(present)))
    out += [(f"{c} {s}", NONE) for c, s in absent[::step][: len(present)]]
    return out


class Detect(LMTask):
    name = "detect"

    def examples(self, data: PretrainData) -> list[tuple[int, str, str]]:
        return [
            (i, d, t) for i, objs in enumerate(data.objects) if objs for d, t in detections(objs, data.vocab)
        ]

    def lm_examples(self, ctx: TaskContext, examples: list[tuple[int, str, str]]) -> tuple:
        prompts = [PROMPT.format(description=d) for _, d, _ in examples]
        return ([i for i, _, _ in examples], prompts, [t for _, _, t in examples])
