"""Build or load generator / filter models through the transformers Auto classes.

Real runs load a pretrained checkpoint (hub id or local path); the sample world builds a tiny model of the
same architecture from a config. Either way the result is a `save_pretrained` directory with safetensors that
`AutoModelForImageTextToText` / `AutoProcessor` (and vLLM) load without this package.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, PaliGemmaConfig, PaliGemmaProcessor
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from jade.models.pixel_memo import plain
from jade.models.specs import Architecture
from jade.models.tokenizer import train_tokenizer

__all__ = [
    "JADE_META",
    "arch_config",
    "build_model",
    "build_processor",
    "from_config",
    "load",
    "load_processor",
    "read_meta",
    "save",
]

JADE_META = "jade_model.json"  # written beside the weights: what the model is and how it was made


def build_processor(texts: Iterable[str], arch: Architecture) -> PaliGemmaProcessor:
    tokenizer = train_tokenizer(texts, arch.vocab_size)
    image_processor = SiglipImageProcessorPil(size={"height": arch.image_size, "width": arch.image_size})
    image_processor.image_seq_length = (arch.image_size // arch.patch_size) ** 2
    return PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)


def _tower(hidden: int, layers: int, head_dim: int) -> dict:
    """A transformer stack's sizes: heads of ``head_dim``, an MLP 4x the width."""
    return {
        "hidden_size": hidden,
        "intermediate_size": hidden * 4,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, hidden // head_dim),
    }


def arch_config(
    arch: Architecture, vocab: int, image_token: int, pad: int, bos: int, eos: int
) -> PaliGemmaConfig:
    """The transformers config of a from-scratch PaliGemma sized by `arch` (what `build_model` builds)."""
    return PaliGemmaConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            **_tower(arch.vision_hidden, arch.vision_layers, arch.head_dim),
            "image_size": arch.image_size,
            "patch_size": arch.patch_size,
        },
        text_config={
            "model_type": "gemma",
            **_tower(arch.text_hidden, arch.text_layers, arch.head_dim),
            "num_key_value_heads": arch.kv_heads,
            "head_dim": arch.head_dim,
            "vocab_size": vocab,
            "max_position_embeddings": 512,
        },
        image_token_index=image_token,
        vocab_size=vocab,
        projection_dim=arch.text_hidden,
        hidden_size=arch.text_hidden,
        pad_token_id=pad,
        bos_token_id=bos,
        eos_token_id=eos,
    )


def build_model(arch: Architecture, processor: PaliGemmaProcessor, seed: int = 0):
    """A from-scratch PaliGemma: SigLIP vision tower + Gemma decoder, sized by `arch`."""
    tok = processor.tokenizer
    cfg = arch_config(
        arch, len(tok), processor.image_token_id, tok.pad_token_id, tok.bos_token_id, tok.eos_token_id
    )
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    return model


def from_config(config: dict, seed: int = 0):
    """A model of a transformers config (a dict) with random weights."""
    cfg = PaliGemmaConfig.from_dict(config)
    torch.manual_seed(seed)
    return AutoModelForImageTextToText.from_config(cfg)


def load(path_or_id: str, trust_remote_code: bool = False, dtype: torch.dtype | None = None):
    """(model, processor) from a save_pretrained directory or a hub id; safetensors only."""
    processor = AutoProcessor.from_pretrained(path_or_id, trust_remote_code=trust_remote_code)
    model = AutoModelForImageTextToText.from_pretrained(
        path_or_id, trust_remote_code=trust_remote_code, use_safetensors=True, dtype=dtype
    )
    model.eval()
    return model, processor


def load_processor(path: str | Path):
    """A saved processor (tokenizer + image processor); never remote code."""
    return AutoProcessor.from_pretrained(str(path))


def read_meta(path: str | Path) -> dict:
    p = Path(path) / JADE_META
    return json.loads(p.read_text()) if p.exists() else {}


def save(model, processor, path: str | Path, meta: dict) -> None:
    path = Path(path)
    model.save_pretrained(path, safe_serialization=True)
    plain(processor).save_pretrained(path)
    (path / JADE_META).write_text(json.dumps(meta, indent=2, sort_keys=True))
