"""Expansion of source URL patterns: brace ranges and lists, globs, directories, fsspec protocols.

`expand_urls(["/data/{00000..00002}.tar", "s3://bucket/cc12m/*.tar"])` returns the matching files,
naturally sorted and deduplicated. Local files come back as absolute plain paths (`file://` stripped),
others as full URLs. A pattern that matches nothing is a `FileNotFoundError` naming the pattern.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .common import natural_key

_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)(?:\.\.(\d+))?")
_GLOB_CHARS = ("*", "?", "[")
_NO_LISTING = ("http", "https")


def expand_braces(pattern: str) -> list[str]:
    """Expand `{00000..00331}` (zero padding kept, optional `..step`) and `{a,b}` lists, like bash."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    head, body, tail = pattern[: match.start()], match.group(1), pattern[match.end() :]
    rng = _RANGE.fullmatch(body)
    if rng:
        first, last, step = rng.group(1), rng.group(2), int(rng.group(3) or 1)
        padded = any(len(s.lstrip("-")) > 1 and s.lstrip("-").startswith("0") for s in (first, last))
        width = max(len(first), len(last)) if padded else 0
        a, b = int(first), int(last)
        values = range(a, b + 1, step) if a <= b else range(a, b - 1, -step)
        options = [str(v).zfill(width) for v in values]
    elif "," in body:
        options = body.split(",")
    else:  # not an expansion: keep the braces literally
        return [head + "{" + body + "}" + rest for rest in expand_braces(tail)]
    return [out for option in options for out in expand_braces(head + option + tail)]


def _is_glob(path: str) -> bool:
    return any(c in path for c in _GLOB_CHARS)


class _Lister:
    """Lists each parent folder once (name → type), so checking N shards costs one listing."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, str], dict[str, str]] = {}

    def entries(self, fs: fsspec.AbstractFileSystem, folder: str) -> dict[str, str]:
        key = (id(fs), folder)
        if key not in self._cache:
            try:
                listing = fs.ls(folder, detail=True)
            except (FileNotFoundError, NotADirectoryError):
                listing = []
            self._cache[key] = {str(e["name"]).rstrip("/"): e.get("type", "file") for e in listing}
        return self._cache[key]


def _files_in(fs, folder: str, suffixes: tuple[str, ...]) -> list[str]:
    found = []
    for entry in fs.ls(folder, detail=True):
        name = str(entry["name"]).rstrip("/")
        if entry.get("type", "file") == "file" and name.lower().endswith(suffixes):
            found.append(name)
    return found


def _resolve(path: str, fs, suffixes, lister: _Lister) -> list[str]:
    """Files for one brace-expanded path (a glob, a file or a directory); [] when nothing matches."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    if any(p in _NO_LISTING for p in protocols):
        return [path]  # HTTP cannot be listed reliably: trusted as given
    if _is_glob(path):
        found = []
        for name, info in sorted(fs.glob(path, detail=True).items()):
            if info.get("type", "file") == "directory":
                found.extend(_files_in(fs, name, suffixes) if suffixes else [])
            elif not suffixes or name.lower().endswith(suffixes):
                found.append(name)
        return found
    path = path.rstrip("/") or path
    parent = path.rsplit("/", 1)[0] if "/" in path else "."
    kind = lister.entries(fs, parent or "/").get(path)
    if kind is None and fs.exists(path):  # e.g. listings that spell names differently
        kind = "directory" if fs.isdir(path) else "file"
    if kind is None:
        return []
    if kind == "directory":
        if not suffixes:
            raise IsADirectoryError(f"{path!r} is a directory; name the files (e.g. with a glob)")
        return _files_in(fs, path, suffixes)
    return [path]


def expand_urls(urls: str | Iterable[str], suffixes: Iterable[str] | None = None) -> list[str]:
    """Expand URL patterns to the files they name: sorted, deduplicated.

    Each entry may hold brace ranges/lists, glob characters, an fsspec protocol (`file://`, `s3://`),
    or name a directory (its files ending in one of `suffixes` are taken; globs are filtered the same
    way). Raises FileNotFoundError naming the pattern when a pattern, or one of its brace expansions,
    matches nothing.
    """
    patterns = [urls] if isinstance(urls, str) else [str(u) for u in urls]
    sfx = tuple(s.lower() for s in suffixes) if suffixes else ()
    lister = _Lister()
    out: set[str] = set()
    for pattern in patterns:
        matched, missing = [], []
        for expanded in expand_braces(pattern):
            fs, path = fsspec.core.url_to_fs(expanded)
            found = _resolve(path, fs, sfx, lister)
            if not found:
                missing.append(expanded)
            local = isinstance(fs, LocalFileSystem)
            matched.extend(p if local else fs.unstrip_protocol(p) for p in found)
        if not matched:
            raise FileNotFoundError(f"no file matches {pattern!r}")
        if missing:
            shown = ", ".join(repr(m) for m in missing[:3]) + (" ..." if len(missing) > 3 else "")
            raise FileNotFoundError(f"{len(missing)} of the files named by {pattern!r} do not exist: {shown}")
        out.update(matched)
    return sorted(out, key=natural_key)


def expand_paths(paths: str | Iterable[str], suffixes: Iterable[str] = (".json",)) -> list[str]:
    """`expand_urls` for annotation files: directories contribute their files ending in `suffixes`."""
    return expand_urls(paths, suffixes=suffixes)
