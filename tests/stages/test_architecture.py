"""ARCHITECTURE.md has one line per stage, in data-flow order, and describes `stages/` exactly: every module
there is a stage the application runs, and every stage it runs has its line."""

import re
from pathlib import Path

from jade.app.manifest import Manifest
from jade.app.runner import build_stages

ROOT = Path(__file__).resolve().parents[2]


def test_architecture_lists_the_stages_folder_in_data_flow_order():
    lines = [
        m.group(1)
        for m in re.finditer(r"^- `stages/(\w+)\.py`", (ROOT / "ARCHITECTURE.md").read_text(), re.M)
    ]
    folder = sorted(p.stem for p in (ROOT / "stages").glob("*.py") if p.stem != "__init__")
    run_order = list(dict.fromkeys(type(st).__module__.rsplit(".", 1)[-1] for st in build_stages(Manifest())))
    assert sorted(lines) == folder  # one line per module, no module without its line
    assert lines == run_order  # every module holds a stage, listed in the order the stages run
