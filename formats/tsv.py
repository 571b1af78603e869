"""Conceptual Captions TSV readers: CC3M (`caption<TAB>url`) and CC12M (`url<TAB>caption`).

Lines are split on tabs only; quotes are ordinary characters (captions contain `"`). Extra columns
(the CC3M image-labels file) are ignored. Files have no header, but a first line whose fields name the
columns (`caption<TAB>url`, as img2dataset inputs have) is recognized and used. A missing final newline
and CRLF line ends are tolerated. Lines are read as bytes and split on `\\n` only.
"""

from __future__ import annotations

from collections.abc import Iterator

from .common import CountingReader, ReadStats, open_binary

COLUMNS = {"cc3m": ("caption", "url"), "cc12m": ("url", "caption")}
_HEADER_NAMES = {"url", "caption", "text", "txt", "alt_text"}


class TSVReader(CountingReader):
    """Streams (url, caption) pairs from a CC3M/CC12M TSV file; counts skipped lines in `stats`."""

    def __init__(self, path: str, kind: str = "cc3m") -> None:
        if kind not in COLUMNS:
            raise ValueError(f"unknown TSV kind {kind!r}; expected one of {sorted(COLUMNS)}")
        self.path, self.kind = str(path), kind
        self.stats = ReadStats()

    def _iter(self) -> Iterator[tuple[str, str]]:
        names = COLUMNS[self.kind]
        url_col, cap_col = names.index("url"), names.index("caption")
        with open_binary(self.path) as f:
            for lineno, raw in enumerate(f, start=1):
                line = raw.rstrip(b"\n").rstrip(b"\r")
                try:
                    text = line.decode("utf-8")
                except UnicodeDecodeError:
                    text = line.decode("utf-8", errors="replace")
                    self.stats.add("lines_with_bad_utf8")
                if not text.strip():
                    self.stats.add("skipped_empty_line")
                    continue
                fields = text.split("\t")
                if lineno == 1 and self._is_header(fields):
                    lowered = [f.strip().lower() for f in fields]
                    url_col = lowered.index("url")
                    cap_col = next(
                        lowered.index(n) for n in ("caption", "text", "txt", "alt_text") if n in lowered
                    )
                    self.stats.add("header_lines")
                    continue
                if len(fields) <= max(url_col, cap_col):
                    self.stats.add("skipped_too_few_fields")
                    continue
                url = fields[url_col].strip()
                if not url:
                    self.stats.add("skipped_no_url")
                    continue
                self.stats.add("rows")
                yield url, fields[cap_col]

    @staticmethod
    def _is_header(fields: list[str]) -> bool:
        lowered = {f.strip().lower() for f in fields}
        return "url" in lowered and len(lowered & _HEADER_NAMES) >= 2 and not any("://" in f for f in fields)


def iter_tsv(path: str, kind: str = "cc3m") -> Iterator[tuple[str, str]]:
    """Stream (url, caption) from a CC3M (`kind="cc3m"`) or CC12M (`kind="cc12m"`) TSV file."""
    return iter(TSVReader(path, kind))
