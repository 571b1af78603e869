"""Shared helpers of the format readers: fsspec opening, read statistics, streaming JSON.

JSON files are streamed with ijson (C backend), never loaded whole. A parse error becomes a `FormatError`
naming the file and the exact byte offset where the parser gave up: the failing 64 KiB chunk is known
while streaming, and the file is then re-parsed once, one byte at a time inside that chunk, to find the
byte (this costs one extra pass, on the error path only).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fsspec
import ijson

from .errors import FormatError

BUF_SIZE = 64 * 1024
_BOM = b"\xef\xbb\xbf"
_WS = b" \t\r\n"


class ReadStats:
    """Counters kept by a reader while it iterates.

    Any counter reads as 0 until it is counted, so `reader.stats.skipped_no_answer` always works.
    `as_dict()` gives the counted values.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1) -> None:
        if n:
            self.counts[name] += n

    def reset(self) -> None:
        self.counts.clear()

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)

    def __getattr__(self, name: str) -> int:
        if name.startswith("_") or name == "counts":
            raise AttributeError(name)
        return self.counts.get(name, 0)

    def __repr__(self) -> str:
        return f"ReadStats({dict(self.counts)})"


class CountingReader:
    """An iterable reader that counts what it reads in ``stats``, afresh on every pass: subclasses set
    ``self.stats = ReadStats()`` and implement ``_iter()``."""

    stats: ReadStats

    def __iter__(self):
        self.stats.reset()
        return self._iter()

    def _iter(self):  # pragma: no cover - every reader defines it
        raise NotImplementedError


@contextmanager
def open_binary(url: str) -> Iterator[Any]:
    """Open a local path or fsspec URL for binary reading (`.gz`/`.bz2`/... are decompressed)."""
    with fsspec.open(str(url), "rb", compression="infer") as f:
        yield f


def natural_key(text: str) -> list:
    """Sort key that orders embedded numbers numerically (`chunk_2` before `chunk_10`)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


class _CountingReader:
    """File wrapper for ijson: counts bytes, remembers where the last chunk started, can peek.

    With `one_byte_from` set, reads return single bytes from that offset on (used to locate errors).
    """

    def __init__(self, raw: Any, one_byte_from: int | None = None) -> None:
        self.raw = raw
        self.pos = 0  # raw bytes handed out so far (BOM included)
        self.last_start = 0
        self.eof = False
        self.one_byte_from = one_byte_from
        self._pending = b""

    def peek_first(self) -> tuple[int, bytes]:
        """Return (offset, byte) of the first non-whitespace byte (b"" for an empty document)."""
        first = True
        while True:
            chunk = self.raw.read(BUF_SIZE)
            if first and chunk.startswith(_BOM):
                chunk, self.pos = chunk[3:], 3
            first = False
            self._pending += chunk
            stripped = self._pending.lstrip(_WS)
            if stripped or not chunk:
                return self.pos + len(self._pending) - len(stripped), stripped[:1]

    def read(self, n: int = -1) -> bytes:
        if n == 0:
            return b""
        if self.one_byte_from is not None:
            n = 1 if self.pos >= self.one_byte_from else min(n, self.one_byte_from - self.pos)
        if self._pending:
            data, self._pending = self._pending[:n], self._pending[n:]
        else:
            data = self.raw.read(n)
        self.last_start = self.pos
        self.pos += len(data)
        self.eof = not data
        return data


def _locate_error(url: str, chunk_start: int) -> int | None:
    """Re-parse `url`, feeding single bytes from `chunk_start`, and return the failing byte's offset."""
    try:
        with open_binary(url) as raw:
            reader = _CountingReader(raw, one_byte_from=chunk_start)
            reader.peek_first()
            try:
                for _ in ijson.basic_parse(reader, buf_size=BUF_SIZE):
                    pass
            except ijson.JSONError:
                return reader.pos if reader.eof else max(reader.pos - 1, 0)
    except OSError:
        return None
    return None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextmanager
def json_stream(url: str, top: bytes | None) -> Iterator[_CountingReader]:
    """Open `url` for ijson; check the top-level value starts with `top` (b"[" or b"{").

    ijson errors raised inside the block become `FormatError(url, byte, message)`.
    """
    with open_binary(url) as raw:
        reader = _CountingReader(raw)
        offset, first = reader.peek_first()
        if not first:
            raise FormatError(url, offset, "empty JSON document")
        if top is not None and first != top:
            kind = "array" if top == b"[" else "object"
            raise FormatError(url, offset, f"expected a JSON {kind} at the top level, found {first!r}")
        try:
            yield reader
        except ijson.JSONError as exc:
            position = _locate_error(url, reader.last_start)
            raise FormatError(url, position, f"malformed JSON: {_first_line(exc)}") from None


def iter_json_items(url: str, prefix: str = "item", top: bytes | None = b"[") -> Iterator[Any]:
    """Stream the values under `prefix` (ijson syntax: "item" = elements of a top-level array)."""
    with json_stream(url, top) as reader:
        yield from ijson.items(reader, prefix, use_float=True, buf_size=BUF_SIZE)


def iter_json_kvitems(url: str, prefix: str = "", top: bytes | None = b"{") -> Iterator[tuple[str, Any]]:
    """Stream (key, value) pairs of the object at `prefix` ("" = the top-level object)."""
    with json_stream(url, top) as reader:
        yield from ijson.kvitems(reader, prefix, use_float=True, buf_size=BUF_SIZE)


def iter_json_events(url: str, top: bytes | None = b"{") -> Iterator[tuple[str, str, Any]]:
    """Stream ijson (prefix, event, value) parse events."""
    with json_stream(url, top) as reader:
        yield from ijson.parse(reader, use_float=True, buf_size=BUF_SIZE)


def require_dict(url: str, value: Any, what: str) -> dict:
    """Return `value` if it is a dict, else raise a FormatError naming `what`."""
    if not isinstance(value, dict):
        raise FormatError(url, None, f"{what} is a {type(value).__name__}, expected a JSON object")
    return value
