"""A shared start for a comparison: the vision tower of a finished checkpoint (`pretrain.init_vision`).

JADE pretrains from a CLIP image encoder, not from nothing; every setting of its table starts from the same
one. Here the settings of the paper table start from one vision tower too (the shipped base's, trained on
scenes no dataset of the world holds), while the decoder, the projector, the heads and the tokenizer start
fresh, so what a setting's language data teaches is still all to learn. The tower must be the same shape:
widths, depths, heads, image and patch size; anything else is an error naming the setting.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

PREFIX = "lm.model.vision_tower."  # where PretrainModel keeps the tower
SAVED = "vision_tower."  # where a save_pretrained PaliGemma keeps it
SHAPE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
SHAPE_KEYS += ("image_size", "patch_size")


def load_vision_tower(model: torch.nn.Module, checkpoint: str | Path) -> int:
    """Copy the vision tower of ``checkpoint`` into ``model`` (a PretrainModel); returns the tensors copied."""
    ckpt = Path(checkpoint)
    if not (ckpt / "model.safetensors").exists():
        raise FileNotFoundError(f"pretrain.init_vision: {ckpt}/model.safetensors not found")
    theirs = json.loads((ckpt / "config.json").read_text())["vision_config"]
    ours = model.lm.config.vision_config.to_dict()
    wrong = [k for k in SHAPE_KEYS if theirs.get(k) != ours.get(k)]
    if wrong:
        diff = ", ".join(f"{k} {ours.get(k)} here, {theirs.get(k)} there" for k in wrong)
        raise ValueError(f"pretrain.init_vision: {ckpt}'s vision tower differs from pretrain.arch: {diff}")
    saved = load_file(str(ckpt / "model.safetensors"))
    state = {k[len(PREFIX) :]: v for k, v in model.state_dict().items() if k.startswith(PREFIX)}
    missing = [k for k in state if SAVED + k not in saved or saved[SAVED + k].shape != state[k].shape]
    if missing:
        raise ValueError(f"pretrain.init_vision: {ckpt} lacks (or has another shape of) {missing[:3]}")
    with torch.no_grad():
        tower = model.lm.model.vision_tower
        tower.load_state_dict({k: saved[SAVED + k] for k in state}, strict=True)
    return len(state)
