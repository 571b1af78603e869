"""The real-format fixtures: the repository's own copy, tests/fixtures/real-formats (taken unchanged from the
team's shared/fixtures/real-formats; SHA256SUMS lists every file). A clone alone runs every test."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL_FORMATS = ROOT / "tests" / "fixtures" / "real-formats"


def real_formats_dir() -> Path:
    return REAL_FORMATS
