"""Bind a phrase to its object, every way a scene allows: each templated question that needs finding an object
by what it is and reading another of its attributes or its place, asked of every object (and every ordered
pair, under every relation) that the scene lets the question single out, with the true answer. The `vqa` task
samples a few questions a scene, so these kinds are about 1% of a batch there; here each scene asks all of
them: ``What color is the <shape>?`` (by shape), ``What shape is the <colour> object?`` (by colour), ``Where
is the <colour> <shape>?``, and ``Is the <colour> <shape> <relation> the <colour> <shape>?`` for all four
relations (yes or no from the objects' cells). The prompt is the factory's answer prompt (world source only)."""

from __future__ import annotations

from jade.models.pretrain.base import PretrainData, Vocabulary
from jade.models.pretrain.task_relate import relations
from jade.models.pretrain.task_vqa import VQA


def _alone(objects: list[dict], o: dict, *keys: str) -> bool:
    return sum(all(p[k] == o[k] for k in keys) for p in objects) == 1


def binding_questions(objects: list[dict], vocab: Vocabulary, relate: bool = True) -> list[tuple[str, str]]:
    """(question, answer) for every binding question the scene allows (without the relation questions when
    not ``relate``)."""
    out = []
    for o in objects:
        if _alone(objects, o, "shape"):
            out.append((f"What color is the {o['shape']}?", o["color"]))
        if _alone(objects, o, "color"):
            out.append((f"What shape is the {o['color']} object?", o["shape"]))
    named = [o for o in objects if _alone(objects, o, "color", "shape")]
    for a in named:
        out.append((f"Where is the {a['color']} {a['shape']}?", a["position"]))
        for b in named if relate else []:
            if a is not b:
                held = relations(a, b, vocab)
                out += [
                    (
                        f"Is the {a['color']} {a['shape']} {r} the {b['color']} {b['shape']}?",
                        "yes" if r in held else "no",
                    )
                    for r in vocab.relations
                ]
    return out


class Binding(VQA):
    """The `vqa` task's loss (answer prompt, LM loss on the answer) on every binding question of a scene."""

    name = "binding"

    def examples(self, data: PretrainData) -> list[tuple[int, str, str]]:
        return [
            (i, q, a)
            for i, objs in enumerate(data.objects)
            if objs
            for q, a in binding_questions(objs, data.vocab)
        ]


class Query(Binding):
    """The binding questions that find one object and read one thing about it (its colour by its shape, its
    shape by its colour, its place by both), without the relation questions: with four objects a scene has
    up to 48 relation questions and at most 4 of each other kind, so in `binding` a colour-by-shape question
    is about 1% of the draws. As a task of its own, the dynamic mixer gives these questions a share by their
    own loss."""

    name = "query"

    def examples(self, data: PretrainData) -> list[tuple[int, str, str]]:
        return [
            (i, q, a)
            for i, objs in enumerate(data.objects)
            if objs
            for q, a in binding_questions(objs, data.vocab, False)
        ]


def relation_questions(objects: list[dict], vocab: Vocabulary) -> list[tuple[str, str]]:
    """The world's relation questions, yes and no balanced per ordered pair: every relation that holds from A
    to B (yes) and as many that do not (no; those of the axis the pair differs on first, so a pair side by
    side is asked about left and right, not only about above and below)."""
    named = [o for o in objects if _alone(objects, o, "color", "shape")]
    out = []
    for a in named:
        for b in named:
            if a is b:
                continue
            held = relations(a, b, vocab)
            # not-held relations, the ones of an axis where the pair differs first (the harder "no")
            differs = {vocab.relation_axis(r) for r in held}
            wrong = sorted(
                (r for r in vocab.relations if r not in held),
                key=lambda r: vocab.relation_axis(r) not in differs,
            )
            for r, answer in [(r, "yes") for r in held] + [(r, "no") for r in wrong[: max(len(held), 1)]]:
                out.append((f"Is the {a['color']} {a['shape']} {r} the {b['color']} {b['shape']}?", answer))
    return out


class Relation(Binding):
    """Relation questions only, yes and no balanced (`relation_questions`). In `binding` a pair is asked about
    all four relations, so "no" is the answer two times in three, and a model that answers "no" to every
    left/right question stays there (docs/base.md: 8 of 310 such "yes" questions right after stage 3)."""

    name = "relation"

    def examples(self, data: PretrainData) -> list[tuple[int, str, str]]:
        return [
            (i, q, a)
            for i, objs in enumerate(data.objects)
            if objs
            for q, a in relation_questions(objs, data.vocab)
        ]
