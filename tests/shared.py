"""Where ../shared (the steering repo's fixtures) lives: inside the checkout, beside it, or $JADE_SHARED.

Missing fixtures fail the tests that need them (the real formats must load unchanged), never skip them.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def real_formats_dir() -> Path:
    candidates = [Path(os.environ["JADE_SHARED"])] if os.environ.get("JADE_SHARED") else []
    candidates += [ROOT / "shared", ROOT.parent / "shared"]
    for c in candidates:
        if (c / "fixtures" / "real-formats").is_dir():
            return c / "fixtures" / "real-formats"
    raise FileNotFoundError(
        "real-format fixtures not found: put the shared/ folder beside the checkout or set JADE_SHARED "
        f"(looked in {', '.join(str(c) for c in candidates)})"
    )
