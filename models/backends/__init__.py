"""Generation backends behind one protocol (`base.Backend`), chosen by name from a registry (lm-evaluation-
harness's `@register_model`): ``hf`` (default), ``vllm`` (its own environment) and ``fake`` (tests whose subject
is not the model). `register_backend` adds one; the manifest's ``generate.backend`` names it.

A factory takes the checkpoint folder and the engine options and returns a backend.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["EngineOptions", "backend_names", "make_backend", "register_backend"]


@dataclass(frozen=True)
class EngineOptions:
    """How an engine runs (speed and memory only, never its outputs)."""

    decode_rows: int = 256  # sequences decoded together (hf: rows of a decode batch; vLLM: max_num_seqs)
    threads: int | None = None  # torch threads (None: the machine's cores)
    trust_remote_code: bool = False


Factory = Callable[[str, EngineOptions], object]
_REGISTRY: dict[str, Factory] = {}


def register_backend(name: str) -> Callable[[Factory], Factory]:
    """Register ``factory(model_dir, options) -> Backend`` under ``name``."""

    def add(factory: Factory) -> Factory:
        _REGISTRY[name] = factory
        return factory

    return add


def backend_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def make_backend(name: str, model_dir: str, options: EngineOptions | None = None):
    if name not in _REGISTRY:
        raise ValueError(f"unknown backend {name!r} (known: {', '.join(_REGISTRY)})")
    return _REGISTRY[name](model_dir, options or EngineOptions())


@register_backend("hf")
def _hf(model_dir: str, options: EngineOptions):
    import torch

    from jade.models import factory
    from jade.models.attention import rule_of
    from jade.models.backends.hf import HFBackend

    # Ray pins OMP threads to an actor's CPU share (1 for fractional actors); use what we were given.
    torch.set_num_threads(options.threads or os.cpu_count() or 1)
    model, processor = factory.load(model_dir, trust_remote_code=options.trust_remote_code)
    return HFBackend(model, processor, batch_size=options.decode_rows, attention=rule_of(model_dir))


@register_backend("vllm")
def _vllm(model_dir: str, options: EngineOptions):
    from jade.models.backends.vllm import VLLMBackend

    return VLLMBackend(model_dir, batch_size=options.decode_rows, trust_remote_code=options.trust_remote_code)


@register_backend("fake")
def _fake(model_dir: str, options: EngineOptions):
    from jade.models.backends.fake import FakeBackend

    return FakeBackend.from_dir(model_dir)
