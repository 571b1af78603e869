"""Bind a phrase to its object, every way a scene allows: each templated question that needs finding an object
by what it is and reading another of its attributes or its place, asked of every object (and every ordered
pair, under every relation) that the scene lets the question single out, with the true answer. The `vqa` task
samples a few questions a scene, so these kinds are about 1% of a batch there; here each scene asks all of
them: ``What color is the <shape>?`` (by shape), ``What shape is the <colour> object?`` (by colour), ``Where
is the <colour> <shape>?``, and ``Is the <colour> <shape> <relation> the <colour> <shape>?`` for all four
relations (yes or no from the objects' cells). The prompt is the factory's answer prompt (world source only)."""

from __future__ import annotations

from jade.models.pretrain.base import PretrainData
from jade.models.pretrain.task_relate import relations
from jade.models.pretrain.task_vqa import VQA
from jade.sampleworld.scene import RELATIONS


def _alone(objects: list[dict], o: dict, *keys: str) -> bool:
    return sum(all(p[k] == o[k] for k in keys) for p in objects) == 1


def binding_questions(objects: list[dict]) -> list[tuple[str, str]]:
    """(question, answer) for every binding question the scene allows."""
    out = []
    for o in objects:
        if _alone(objects, o, "shape"):
            out.append((f"What color is the {o['shape']}?", o["color"]))
        if _alone(objects, o, "color"):
            out.append((f"What shape is the {o['color']} object?", o["shape"]))
    named = [o for o in objects if _alone(objects, o, "color", "shape")]
    for a in named:
        out.append((f"Where is the {a['color']} {a['shape']}?", a["position"]))
        for b in named:
            if a is not b:
                held = relations(a, b)
                out += [
                    (
                        f"Is the {a['color']} {a['shape']} {r} the {b['color']} {b['shape']}?",
                        "yes" if r in held else "no",
                    )
                    for r in RELATIONS
                ]
    return out


class Binding(VQA):
    """The `vqa` task's loss (answer prompt, LM loss on the answer) on every binding question of a scene."""

    name = "binding"

    def examples(self, data: PretrainData) -> list[tuple[int, str, str]]:
        return [(i, q, a) for i, objs in enumerate(data.objects) if objs for q, a in binding_questions(objs)]
