"""Small file helpers shared by the writers: JSON in the published layouts, bytes, a guard on folders."""

from __future__ import annotations

import json
from pathlib import Path


def dump_json(path: Path, obj, *, newline: bool = False, indent: int | None = None) -> None:
    """Write ``obj`` as JSON with Python's default separators (as the published files are), keeping key
    order; ``newline`` adds the final ``\\n`` that some published files have and others lack."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=indent)
    path.write_text(text + ("\n" if newline else ""), encoding="utf-8")


def write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def check_replaceable(out: Path) -> None:
    """A world may replace an existing ``out`` only if it is empty or is itself a sample world (has
    ``world.json``); anything else is refused, never deleted."""
    if out.exists() and any(out.iterdir()) and not (out / "world.json").exists():
        raise FileExistsError(f"{out} exists and is not a sample world; refusing to replace it")
