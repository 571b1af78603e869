"""A deterministic fake backend for unit tests whose subject is not the model (stage plumbing, stats).

``generate.backend: fake`` builds it from the checkpoint folder: its answers, sample pools and scores come from
``fake_backend.json`` there when the folder has one (``{"answers": {prompt: text}, "pool": {prompt: [text]},
"scores": {prompt: p}}``), else it answers "yes" and samples "sample N"."""

from __future__ import annotations

import json
import random
from pathlib import Path

from PIL import Image

from jade.models.backends.base import Completion, Request


class FakeBackend:
    """Answers from a table keyed by prompt; samples come from a seeded RNG over `pool` (so they vary)."""

    name = "fake"

    def __init__(
        self,
        answers: dict[str, str] | None = None,
        pool: dict[str, list[str]] | None = None,
        scores: dict[str, float] | None = None,
    ):
        self.answers = answers or {}
        self.pool = pool or {}
        self.scores = scores or {}  # a greedy answer's probability by prompt (else 1.0)
        self.calls = 0

    @classmethod
    def from_dir(cls, model_dir: str) -> FakeBackend:
        script = Path(model_dir) / "fake_backend.json"
        return cls(**json.loads(script.read_text())) if script.is_file() else cls()

    def prepare(self, images: list[Image.Image]) -> list[Image.Image]:
        return list(images)

    def generate(self, images: list[Image.Image], requests: list[Request]) -> list[list[Completion]]:
        self.calls += 1
        out = []
        for r in requests:
            if r.greedy:
                out.append([Completion(self.answers.get(r.prompt, "yes"), self.scores.get(r.prompt, 1.0))])
            else:
                rng = random.Random(f"{r.seed}:{r.prompt}")
                choices = self.pool.get(r.prompt, [f"sample {i}" for i in range(10)])
                out.append([Completion(rng.choice(choices), 0.5) for _ in range(r.n)])
        return out
