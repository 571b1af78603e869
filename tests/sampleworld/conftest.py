"""Shared fixtures: one small sample world per session, and the real-format fixture files."""

from __future__ import annotations

from pathlib import Path

import pytest

from jade.sampleworld import WorldConfig, write_world
from tests.shared import real_formats_dir

REAL = real_formats_dir()

SMALL = dict(
    vg_images=30,
    gqa_images=40,
    vqa_train_images=30,
    vqa_val_images=10,
    cc3m_images=90,
    cc3m_shards=3,
    cc3m_failed_fraction=0.1,
)


@pytest.fixture(scope="session")
def real() -> Path:
    return REAL


@pytest.fixture(scope="session")
def small_cfg() -> WorldConfig:
    return WorldConfig(seed=3, **SMALL)


@pytest.fixture(scope="session")
def world(tmp_path_factory, small_cfg) -> Path:
    out = tmp_path_factory.mktemp("sw") / "world"
    write_world(out, small_cfg)
    return out
