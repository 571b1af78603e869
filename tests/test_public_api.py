"""research/ and bench/ use the product's public API only: every name they take from a `jade` module is in that
module's `__all__` (and a module they use as a whole, its attributes too), so the product can change its
internals without breaking them. The product never imports research/ or bench/."""

import ast
import importlib
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("research", "bench")
PRODUCT = ("app", "formats", "models", "pipeline", "reports", "sampleworld", "stages")


def _module(name: str) -> types.ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _uses(path: Path):
    """(module, name) for every `from jade.x import name`, and every attribute read off an imported module."""
    tree = ast.parse(path.read_text())
    modules = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jade"):
            for a in node.names:
                sub = _module(f"{node.module}.{a.name}")
                if sub is not None:
                    modules[a.asname or a.name] = sub.__name__
                else:
                    yield node.module, a.name
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("jade.") and a.asname:
                    modules[a.asname] = a.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            yield modules[node.value.id], node.attr


def test_tools_use_only_names_in_all():
    bad = []
    for folder in TOOLS:
        for path in sorted((ROOT / folder).glob("*.py")):
            for module, name in _uses(path):
                public = getattr(importlib.import_module(module), "__all__", None)
                if public is None or name not in public:
                    bad.append(f"{path.relative_to(ROOT)}: {module}.{name}")
    assert not bad, "not in the module's __all__:\n" + "\n".join(sorted(set(bad)))


def test_the_product_never_imports_the_tools():
    for folder in PRODUCT:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom | ast.Import):
                    names = (
                        [node.module or ""]
                        if isinstance(node, ast.ImportFrom)
                        else [a.name for a in node.names]
                    )
                    assert not any(n.split(".")[0] in TOOLS for n in names), path
