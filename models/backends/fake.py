"""A deterministic fake backend for unit tests whose subject is not the model (stage plumbing, stats)."""

from __future__ import annotations

import random

from PIL import Image

from jade.models.backends.base import Completion, Request


class FakeBackend:
    """Answers from a table keyed by prompt; samples come from a seeded RNG over `pool` (so they vary)."""

    name = "fake"

    def __init__(self, answers: dict[str, str] | None = None, pool: dict[str, list[str]] | None = None):
        self.answers = answers or {}
        self.pool = pool or {}
        self.calls = 0

    def prepare(self, images: list[Image.Image]) -> list[Image.Image]:
        return list(images)

    def generate(self, images: list[Image.Image], requests: list[Request]) -> list[list[Completion]]:
        self.calls += 1
        out = []
        for r in requests:
            if r.greedy:
                out.append([Completion(self.answers.get(r.prompt, "yes"), 1.0)])
            else:
                rng = random.Random(f"{r.seed}:{r.prompt}")
                choices = self.pool.get(r.prompt, [f"sample {i}" for i in range(10)])
                out.append([Completion(rng.choice(choices), 0.5) for _ in range(r.n)])
        return out
