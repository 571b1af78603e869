"""Loading a YAML recipe into a typed, validated config object: any dataclass, the application says which.

Every error names the offending key by its dotted path (``generate.top_k``) or the missing file, and is raised
before any work starts. ``--set a.b=VALUE`` overrides any key (VALUE parsed as YAML); ``${VAR}`` reads an
environment variable, and an unset one is an error naming it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml

from jade.typed import ConfigError, build

T = TypeVar("T")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def resolve_path(name_or_path: str, folder: Path) -> Path:
    """A name of a YAML file under ``folder`` (``sample``) or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"manifest file not found: {p}")
        return p
    candidate = folder / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = sorted(q.stem for q in folder.glob("*.yaml"))
        raise ConfigError(f"unknown manifest {name_or_path!r}: not a file and not one of {known}")
    return candidate


def load_raw(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a manifest is a mapping at the top level")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``--set a.b.c=VALUE``: VALUE is parsed as YAML (numbers, booleans, lists); dotted path created as needed."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        try:
            node[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {key}: the value is not valid YAML: {e}") from None
    return raw


def expand_vars(obj: Any, env: dict[str, str], at: str = "") -> Any:
    """Replace ${VAR} in every string; an unset variable is an error naming it and the key."""
    if isinstance(obj, dict):
        return {k: expand_vars(v, env, f"{at}.{k}" if at else str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [expand_vars(v, env, f"{at}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, str):

        def sub(m: re.Match) -> str:
            if m.group(1) not in env:
                raise ConfigError(f"{at}: environment variable ${{{m.group(1)}}} is not set")
            return env[m.group(1)]

        return _VAR.sub(sub, obj)
    return obj


def load_config(cls: type[T], path: Path, overrides: list[str], env: dict[str, str]) -> T:
    """Read ``path``, apply the overrides, expand ${VAR}s from ``env`` and build ``cls`` (validated)."""
    raw = expand_vars(apply_overrides(load_raw(path), overrides), env)
    return build(cls, raw, "")
