"""Attention rules (DESIGN.md section 9, a contract): which positions of image + prompt + target see which.

- ``prefix``: image and prompt attend to each other bidirectionally, the target causally (PaliGemma's
  original prefix-LM);
- ``image``: image tokens attend bidirectionally among themselves only; prompt and target are causal and see
  the whole image. What vLLM computes on a GPU (it makes the multimodal span bidirectional), and the rule under
  which an image's keys and values do not depend on the prompt, so they can be computed once per image;
- ``causal``: every position sees only the positions before it (what vLLM's CPU attention computes).

PaliGemma builds its decoder mask from ``token_type_ids``: the positions marked 0 form one bidirectional block,
the rest is causal (the decoder layers themselves are built non-causal, so a batch without ``token_type_ids``
lets every position see the whole sequence, targets included). Every rule is therefore a choice of which
positions are marked 0, made here and nowhere else. Every checkpoint records its rule in ``jade_model.json``
(``attention``); a checkpoint without one (a hub PaliGemma) was trained under ``prefix``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

__all__ = [
    "AttentionRuleError",
    "DEFAULT",
    "RULES",
    "apply",
    "check",
    "rule_of",
    "token_types",
]

if TYPE_CHECKING:  # no torch at import: manifests load this module to validate rules
    import torch

RULES = ("prefix", "image", "causal")
DEFAULT = "prefix"  # PaliGemma's own rule: what a checkpoint without a record was trained with


class AttentionRuleError(ValueError):
    """An engine asked to run a checkpoint under a rule it does not compute."""


def check(rule: str, at: str = "attention") -> str:
    if rule not in RULES:
        raise ValueError(f"{at}: {rule!r} is not one of {', '.join(RULES)}")
    return rule


def token_types(
    input_ids: torch.Tensor, processor_types: torch.Tensor, image_token_id: int, rule: str
) -> torch.Tensor:
    """``token_type_ids`` that make PaliGemma's decoder compute ``rule``. ``processor_types`` are the
    processor's own (0 over image + prompt, 1 over the target): the ``prefix`` rule."""
    if check(rule) == "prefix":
        return processor_types
    if rule == "image":
        return (input_ids != image_token_id).to(processor_types.dtype)
    return processor_types.new_ones(processor_types.shape)


def apply(batch, image_token_id: int, rule: str):
    """Set a processor batch's ``token_type_ids`` for ``rule`` (in place; returns the batch). Labels are left as
    the processor made them: they mark the target, whatever the rule."""
    if "token_type_ids" not in batch:
        raise ValueError("PaliGemma batches need token_type_ids: without them every position sees the target")
    batch["token_type_ids"] = token_types(batch["input_ids"], batch["token_type_ids"], image_token_id, rule)
    return batch


def rule_of(checkpoint: str | Path) -> str:
    """The rule a checkpoint directory was trained under (``jade_model.json``), ``prefix`` when it has none."""
    meta = Path(checkpoint) / "jade_model.json"
    rule = json.loads(meta.read_text()).get("attention") if meta.is_file() else None
    return check(rule or DEFAULT, f"{meta}: attention")
