"""Greedy answers of a vision-language model through plain ``generate``, under an attention rule: the probes
and evaluations use it (the factory's engines are in `models.backends`)."""

from __future__ import annotations

import torch

from jade.models.train import example_batch


@torch.inference_mode()
def greedy(
    lm,
    processor,
    images: list,
    prompts: list[str],
    attention: str,
    max_new: int,
    bs: int = 64,
    device: str = "cpu",
) -> list[str]:
    """One greedy completion (whitespace collapsed) per (image, prompt)."""
    out: list[str] = []
    for s in range(0, len(prompts), bs):
        batch = example_batch(processor, images[s : s + bs], prompts[s : s + bs], None, device, attention)
        gen = lm.generate(**batch, max_new_tokens=max_new, do_sample=False)
        texts = processor.tokenizer.batch_decode(
            gen[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
        )
        out += [" ".join(t.split()) for t in texts]
    return out
