"""A whole factory run with deterministic fake backends (the subject is bookkeeping, not the models): the
generator samples questions from a fixed pool, both models answer from tables, the filter with fixed scores.
The backend is registered by name (``fakerun``) and selected like any other: ``generate.backend=fakerun``."""

import dataclasses
import re

from jade.models.backends import register_backend
from jade.models.backends.base import Request
from jade.models.backends.fake import FakeBackend

QUESTIONS = {
    "question yes/no": ["Is there a red circle?", "Is there a blue square?"],
    "question number": ["How many circles are there?"],
    "question other": [
        "What color is the circle?",
        "What shape is the red object?",
        "Where is the red circle?",
        "What size is the green triangle?",
    ],
    "dense caption": [
        "<loc0100><loc0100><loc0400><loc0400> a red circle",
        "<loc0110><loc0100><loc0400><loc0400> red circle",
        "<loc0600><loc0600><loc0900><loc0900> a blue square",
        "no box here",
    ],
}
# generate.condition: region: the prompt is "question <jade type> <box> <caption>"; the fake samples by type
REGION_QUESTIONS = {
    "question binary": ["Is there a red circle?", "Is the circle red?", "Are there any squares?"],
    "question what": ["What color is the circle?", "What shape is the red object?"],
    "question where": ["Where is the red circle?"],
    "question how": ["How many circles are there?", "How big is the circle?"],
}
GEN_ANSWERS = {
    "answer en Is there a red circle?": "Yes.",
    "answer en How many circles are there?": "two",
    "answer en What color is the circle?": "red",
    "answer en Where is the red circle?": "top left",
}
FILTER_ANSWERS = {
    "answer en Is there a red circle?": "yes",
    "answer en How many circles are there?": "2",
    "answer en What color is the circle?": "blue",
    "answer en Where is the red circle?": "the top left",
    # the presupposition checks of "Where is the red circle?" and "What shape is the red object?"
    "answer en How many red circles are there?": "1",
    "answer en How many red objects are there?": "1",
    # "What size is the green triangle?" is ill-posed: both models answer "yes", but there is none
    "answer en Is there a green triangle?": "no",
    "answer en How many green triangles are there?": "0",
}
FILTER_SCORES = {
    "answer en How many circles are there?": 0.25,
    "answer en Where is the red circle?": 0.75,
}  # else 1.0


BUILT: list[str] = []  # the checkpoint of every fake backend made (tests check that none was)


class RegionAwareFake(FakeBackend):
    """Samples a region prompt from its type's pool (the box and caption vary; the seed still does)."""

    def generate(self, images, requests: list[Request]):
        keyed = [
            dataclasses.replace(r, prompt=" ".join(r.prompt.split()[:2]))
            if re.search(r"<loc\d{4}>", r.prompt)
            else r
            for r in requests
        ]
        return super().generate(images, keyed)


@register_backend("fakerun")
def fake_backend(model_dir, options=None):
    """The generator's checkpoint gets the question pool and its answers; the filter's its answers and scores."""
    BUILT.append(model_dir)
    if model_dir.endswith("generator"):
        return RegionAwareFake(answers=GEN_ANSWERS, pool={**QUESTIONS, **REGION_QUESTIONS})
    return FakeBackend(answers=FILTER_ANSWERS, scores=FILTER_SCORES)


FAKE = ["generate.backend=fakerun"]  # --set: the run's models are the fakes above


REGION = ["generate.condition=region", "generate.region_support=0"]  # every parsed box kept: 2 regions


def make_fake_run(out, extra: list[str] | None = None):
    from jade.app.runner import run_manifest
    from jade.pipeline.executor import LocalExecutor
    from tests.tiny import TINY

    run_manifest("sample", str(out), TINY + FAKE + (extra or []), executor=LocalExecutor())
    return out
