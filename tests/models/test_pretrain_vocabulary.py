"""The pretrainer knows no world: its task vocabulary is passed in with the data (issue 29), and nothing under
models/ imports the sample world."""

import ast
from pathlib import Path

from jade.models.pretrain.base import PretrainData, Vocabulary
from jade.models.pretrain.task_detect import detections
from jade.models.pretrain.task_locate import Locate
from jade.models.pretrain.task_relate import relations

MODELS = Path(__file__).resolve().parents[2] / "models"

# a world that is not the sample world: other colours, shapes and names for the places
OTHER = Vocabulary(
    colors=("cyan", "magenta"),
    shapes=("star", "hexagon"),
    sizes=("tiny", "huge"),
    rows=("north", "south"),
    cols=("west", "east"),
    positions={f"{r}-{c}": (r, c) for r in ("north", "south") for c in ("west", "east")},
    relations=("west of", "east of", "north of", "south of"),
)


def test_nothing_under_models_imports_the_sample_world():
    offenders = []
    for path in MODELS.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            offenders += [f"{path.relative_to(MODELS.parent)}: {n}" for n in names if "sampleworld" in n]
    assert not offenders, offenders


def _obj(color, shape, position, size="tiny"):
    return {"bbox": (0.1, 0.1, 0.3, 0.3), "color": color, "shape": shape, "size": size, "position": position}


def test_tasks_use_the_vocabulary_they_are_given():
    a, b = _obj("cyan", "star", "north-west"), _obj("magenta", "hexagon", "south-east", "huge")
    assert relations(a, b, OTHER) == ["west of", "north of"]
    assert relations(b, a, OTHER) == ["east of", "south of"]
    found = dict(detections([a, b], OTHER))
    assert set(OTHER.shapes) <= set(found) and "circle" not in found
    data = PretrainData(["k"], [None], [""], [[]], [[]], objects=[[a, b]], vocab=OTHER)
    described = {d for _, d, _ in Locate().examples(data)}
    assert "star" in described and "cyan object" in described
    assert not any(w in d for d in described for w in ("red", "circle", "square"))
