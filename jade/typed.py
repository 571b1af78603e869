"""Typed configuration: build a dataclass from plain data (YAML, JSON, ``--set``), once, with errors that name
the offending key by its dotted path (``generate.top_k``). Manifests, the pretrainer's settings and training
jobs all load through `build` (datatrove's typed, validated-once configs).

Values are checked where they are read, not only their types: a field declared with `ranged` carries its
bounds (``steps: int = ranged(600, ge=1)``) and `build` refuses a value outside them, naming the key. A field
declared with `since` (an option added after runs were made with the code before it) is left out of the
settings' fingerprint while it holds its default, so adding an option re-runs nothing that it does not change.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """Invalid configuration; the message names the key or path."""


def build(cls: type, data: Any, at: str) -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types with the dotted key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{at or 'manifest'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = f"{at}.{key}" if at else str(key)
            raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(hints[k], v, f"{at}.{k}" if at else k) for k, v in data.items()}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in kwargs.items():
        check_range(v, fields[k].metadata, f"{at}.{k}" if at else k)
    try:
        obj = cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # a __post_init__ check: name where
        raise ConfigError(f"{at}: {e}" if at else str(e)) from None
    if hasattr(obj, "validate"):
        obj.validate(at)
    return obj


def _coerce(tp: Any, value: Any, at: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            if len(args) != len(typing.get_args(tp)):
                return None
            raise ConfigError(f"{at}: must not be null")
        return _coerce(args[0], value, at)
    if dataclasses.is_dataclass(tp):
        return build(tp, value if value is not None else {}, at)
    if tp in (dict, list, Any):  # untyped containers: as given
        if tp is not Any and not isinstance(value, tp):
            raise ConfigError(
                f"{at}: expected a {'mapping' if tp is dict else 'list'}, got {type(value).__name__}"
            )
        return value
    if origin is list:
        if isinstance(value, str):
            value = [value]  # a single URL/path is a list of one
        if not isinstance(value, list):
            raise ConfigError(f"{at}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(tp)
        return [_coerce(item, v, f"{at}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{at}: expected a mapping, got {type(value).__name__}")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(vt, v, f"{at}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"{at}: expected true/false, got {value!r}")
    if tp in (int, float, str) and (not isinstance(value, tp) or isinstance(value, bool)):
        raise ConfigError(f"{at}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def ranged(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    since: str | None = None,
) -> Any:
    """A dataclass field whose value must lie in the given bounds (None is always allowed where the type is
    optional). ``since``: see `since`."""
    meta: dict[str, Any] = {
        k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None
    }
    if since:
        meta["since"] = since
    return dataclasses.field(default=default, metadata=meta)


def since(
    version: str, default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING
) -> Any:
    """A field added in ``version``: fingerprinted only when it differs from its default (`rundir.fingerprint`)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"since": version})


_BOUNDS = {
    "ge": (lambda v, b: v >= b, "at least"),
    "gt": (lambda v, b: v > b, "greater than"),
    "le": (lambda v, b: v <= b, "at most"),
    "lt": (lambda v, b: v < b, "less than"),
}


def check_range(value: Any, meta: Any, at: str) -> None:
    """Refuse a number outside a `ranged` field's bounds, naming the key and the bounds."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return
    for key, (ok, _) in _BOUNDS.items():
        if key in meta and not ok(value, meta[key]):
            bounds = ", ".join(f"{_BOUNDS[k][1]} {meta[k]}" for k in _BOUNDS if k in meta)
            raise ConfigError(f"{at}: must be {bounds}, got {value!r}")


def validate_choice(value: str, choices: tuple[str, ...], at: str) -> None:
    if value not in choices:
        raise ConfigError(f"{at}: {value!r} is not one of {', '.join(choices)}")
