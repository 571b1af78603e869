"""List the objects: every object of the image in reading order, each as its box (four location tokens) and
its size, colour and shape, separated by " ; " (detection with attributes; world source only)."""

from __future__ import annotations

from jade.models.pretrain.base import LMTask, PretrainData, TaskContext
from jade.models.tasks import box_to_tokens

PROMPT = "objects"


def listing(objects: list[dict]) -> str:
    return " ; ".join(f"{box_to_tokens(o['bbox'])} {o['size']} {o['color']} {o['shape']}" for o in objects)


class Objects(LMTask):
    name = "objects"

    def examples(self, data: PretrainData) -> list[tuple[int, str]]:
        return [(i, listing(objs)) for i, objs in enumerate(data.objects) if objs]

    def lm_examples(self, ctx: TaskContext, examples: list[tuple[int, str]]) -> tuple:
        return ([i for i, _ in examples], [PROMPT] * len(examples), [t for _, t in examples])
