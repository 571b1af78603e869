"""A whole factory run with deterministic fake backends (the subject is bookkeeping, not the models): the
generator samples questions from a fixed pool, both models answer from tables, the filter with fixed scores."""

import pytest

from jade.models.backends.base import Completion
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


class ScoredFake(FakeBackend):
    """The fake filter: greedy answers from the table, with the answer probability from FILTER_SCORES."""

    def generate(self, images, requests):
        return [
            [Completion(c.text, FILTER_SCORES.get(r.prompt, c.score)) for c in comps]
            for r, comps in zip(requests, super().generate(images, requests), strict=True)
        ]


def fake_backend(name, model_dir, *args, **kwargs):
    if model_dir.endswith("generator"):
        return FakeBackend(answers=GEN_ANSWERS, pool=QUESTIONS)
    return ScoredFake(answers=FILTER_ANSWERS)


def make_fake_run(out):
    from jade.app.runner import run_manifest
    from jade.pipeline.executor import LocalExecutor
    from tests.tiny import TINY

    mp = pytest.MonkeyPatch()
    mp.setattr("jade.stages.generate.make_backend", fake_backend)
    mp.setattr("jade.stages.filter.make_backend", fake_backend)
    try:
        run_manifest("sample", str(out), TINY, executor=LocalExecutor())
    finally:
        mp.undo()
    return out
