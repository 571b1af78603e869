"""Helpers for the format-reader tests: the real-format fixtures and small shard builders."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from tests.shared import real_formats_dir

REAL = real_formats_dir()


@pytest.fixture(scope="session")
def real() -> Path:
    return REAL


def image_bytes(mode: str = "RGB", size=(8, 6), fmt: str = "JPEG", color=None, **save) -> bytes:
    """Encode a small solid image."""
    buf = io.BytesIO()
    Image.new(mode, size, color if color is not None else 0).save(buf, fmt, **save)
    return buf.getvalue()


def make_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """Write a tar holding `members` (name, data) in the given order."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="session")
def encode_image():
    """The `image_bytes` helper, as a fixture (test modules here are not a package)."""
    return image_bytes


@pytest.fixture(scope="session")
def build_tar():
    """The `make_tar` helper, as a fixture."""
    return make_tar
