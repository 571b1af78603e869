"""The framework knows no stage, no model and no application; stages hand data to each other only through the
outputs they declare, never through a path string or a stage name of their own making."""

import ast
from pathlib import Path

from jade.app.manifest import Manifest
from jade.app.runner import build_stages
from jade.pipeline.stage import ShardFiles

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("jade.stages", "jade.models", "jade.app", "jade.sampleworld", "jade.reports")


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append(node.module)
    return out


def test_the_framework_imports_no_stage_model_or_application():
    for path in sorted((ROOT / "pipeline").glob("*.py")):
        bad = [m for m in _imports(path) if m.startswith(FORBIDDEN)]
        assert not bad, f"{path.name} imports {bad}"


def test_the_framework_finds_no_stage_method_by_name():
    for path in sorted((ROOT / "pipeline").glob("*.py")):
        text = path.read_text()
        assert "hasattr(st" not in text and "getattr(stage" not in text and "getattr(st," not in text, path


def _strings(path: Path) -> list[str]:
    """Every string the module's code holds (docstrings aside), f-strings with their fields as ``{}``."""
    tree = ast.parse(path.read_text())
    docs = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    out = []
    for n in ast.walk(tree):
        if isinstance(n, ast.JoinedStr):
            out.append("".join(v.value if isinstance(v, ast.Constant) else "{}" for v in n.values))
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs:
            out.append(n.value)
    return out


def _pattern(files) -> str:
    text = files.pattern if isinstance(files, ShardFiles) else files.path
    for field in ("{shard}", "{part}", "{parts}"):
        text = text.replace(field, "{}")
    return text


def test_no_stage_module_names_another_stage_or_its_outputs():
    stages = build_stages(Manifest())
    modules: dict[str, list] = {}
    for st in stages:
        modules.setdefault(type(st).__module__.rsplit(".", 1)[-1], []).append(st)
    for module, mine in modules.items():
        strings = _strings(ROOT / "stages" / f"{module}.py")
        own = {_pattern(o) for st in mine for o in st.outputs}
        for other in (st for st in stages if st not in mine):
            assert other.name not in strings, f"stages/{module}.py names stage {other.name!r}"
            for o in other.outputs:
                p = _pattern(o)
                prefix = p.split("{}")[0]
                assert p not in strings, f"stages/{module}.py retypes {other.name}'s output {p!r}"
                if not any(q.startswith(prefix) for q in own):  # a folder of another stage's own
                    hits = [s for s in strings if s.startswith(prefix)]
                    assert not hits, f"stages/{module}.py writes into {other.name}'s {prefix!r}: {hits}"


def test_every_stage_reads_only_what_an_earlier_stage_declares():
    stages = build_stages(Manifest())
    written = set()
    for st in stages:
        assert set(st.inputs) <= written, st.name
        written |= set(st.outputs)
