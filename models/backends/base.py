"""The generation-backend protocol: every backend (hf, vllm, fake) answers the same requests.

A request is a prompt over one image: ``n`` top-K samples (``greedy=False``) or one greedy completion.
Sampling is seeded per request (``seed``), so a request gives the same samples whatever it is batched with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

__all__ = [
    "Backend",
    "Completion",
    "Request",
]


@dataclass(frozen=True)
class Request:
    image: int  # index into the images passed alongside
    prompt: str
    max_new_tokens: int
    n: int = 1
    greedy: bool = True
    top_k: int = 0
    temperature: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class Completion:
    text: str
    score: float  # exp(mean log-probability of the generated tokens): a confidence in (0, 1]


class Backend(Protocol):
    name: str

    def prepare(self, images: list[Image.Image]) -> Sequence:
        """Images made ready for `generate` (e.g. encoded once); generate also takes plain PIL images."""
        ...

    def generate(self, images: Sequence, requests: list[Request]) -> list[list[Completion]]:
        """One list of completions per request: ``n`` samples, or one greedy completion."""
        ...
