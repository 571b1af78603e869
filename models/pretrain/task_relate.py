"""Relate objects by their places: ``where <colour> <shape>`` -> the object's place (``top left``, ``center``,
...), and ``relate <colour> <shape> ; <colour> <shape>`` -> every spatial relation that holds from the first
object to the second, in the world's order (``to the left of ; above``). Both name objects by colour and shape,
for every object that this singles out and every ordered pair of them, so the model must find two objects by
what they are and compare their places: what relation and position questions need, and what the other tasks
teach only through one yes/no bit at a time (world source only)."""

from __future__ import annotations

from jade.models.pretrain.base import LMTask, PretrainData, TaskContext, Vocabulary

WHERE = "where {a}"
RELATE = "relate {a} ; {b}"


def relations(a: dict, b: dict, vocab: Vocabulary) -> list[str]:
    """The relations from ``a`` to ``b`` (objects with a ``position`` name), by strict row / column order."""
    (ra, ca), (rb, cb) = vocab.positions[a["position"]], vocab.positions[b["position"]]
    ia, ib, ja, jb = vocab.cols.index(ca), vocab.cols.index(cb), vocab.rows.index(ra), vocab.rows.index(rb)
    held = (ia < ib, ia > ib, ja < jb, ja > jb)  # left of, right of, above, below
    return [r for r, h in zip(vocab.relations, held, strict=True) if h]


def relate_examples(objects: list[dict], vocab: Vocabulary) -> list[tuple[str, str]]:
    """(prompt, target) for each object its colour and shape single out, and each ordered pair of them."""
    named = [
        o for o in objects if sum(p["color"] == o["color"] and p["shape"] == o["shape"] for p in objects) == 1
    ]
    out = [(WHERE.format(a=f"{o['color']} {o['shape']}"), o["position"]) for o in named]
    for a in named:
        for b in named:
            if a is not b and (rel := relations(a, b, vocab)):
                out.append(
                    (
                        RELATE.format(a=f"{a['color']} {a['shape']}", b=f"{b['color']} {b['shape']}"),
                        " ; ".join(rel),
                    )
                )
    return out


class Relate(LMTask):
    name = "relate"

    def examples(self, data: PretrainData) -> list[tuple[int, str, str]]:
        return [
            (i, p, t)
            for i, objs in enumerate(data.objects)
            if objs
            for p, t in relate_examples(objs, data.vocab)
        ]

    def lm_examples(self, ctx: TaskContext, examples: list[tuple[int, str, str]]) -> tuple:
        return ([i for i, _, _ in examples], [p for _, p, _ in examples], [t for _, _, t in examples])
