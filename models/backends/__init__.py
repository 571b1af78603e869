"""Generation backends behind one protocol (`base.Backend`): hf (default), vllm (GPU extra), fake (tests)."""

from __future__ import annotations


def make_backend(
    name: str,
    model_dir: str,
    batch_size: int = 32,
    threads: int | None = None,
    trust_remote_code: bool = False,
):
    if name == "hf":
        import os

        import torch

        # Ray pins OMP threads to an actor's CPU share (1 for fractional actors); use what we were given.
        torch.set_num_threads(threads or os.cpu_count() or 1)
        from jade.models import factory
        from jade.models.attention import rule_of
        from jade.models.backends.hf import HFBackend

        model, processor = factory.load(model_dir, trust_remote_code=trust_remote_code)
        return HFBackend(model, processor, batch_size=batch_size, attention=rule_of(model_dir))
    if name == "vllm":
        from jade.models.backends.vllm import VLLMBackend

        return VLLMBackend(model_dir, batch_size=batch_size, trust_remote_code=trust_remote_code)
    raise ValueError(f"unknown backend {name!r}")
