"""Image-text shards (`sources.images`): listing, reading and decoding.

    shards = list_shards("webdataset", ["${CC3M_ROOT}/{00000..00331}.tar"])
    for sample in iter_shard(shards[0]):
        if sample.error: record_failure(sample)
        else: image = decode_image(sample.image_bytes)

Formats: `webdataset` (img2dataset tar output with its sidecar parquet, or any webdataset tar) and
`parquet` (img2dataset parquet output, or Hugging Face `Image` parquet). Every input sample comes out
exactly once, either usable or with `error` set; content damage never raises, I/O errors do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from .common import CountingReader, ReadStats
from .errors import FormatError, ImageError
from .images import decode_image, to_rgb
from .samples import FORMATS, Sample, ShardRef
from .shard_parquet import iter_parquet
from .urls import expand_braces, expand_urls
from .wds import iter_tar

__all__ = [
    "FORMATS",
    "FormatError",
    "ImageError",
    "Sample",
    "ShardReader",
    "ShardRef",
    "decode_image",
    "decode_sample",
    "expand_braces",
    "expand_urls",
    "iter_shard",
    "list_shards",
    "to_rgb",
]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _shard_ids(urls: list[str], suffix: str) -> list[str]:
    """Ids from file names ("00000"); parent folders are prepended only where names collide."""
    parts = [
        u[: -len(suffix)].rstrip("/").split("/") if u.lower().endswith(suffix) else u.split("/") for u in urls
    ]
    depth = 1
    while True:
        ids = [_UNSAFE.sub("_", "-".join(p[-depth:])).strip("_") or "shard" for p in parts]
        if len(set(ids)) == len(ids) or depth >= max(len(p) for p in parts):
            return ids
        depth += 1


def _sources(urls: list[str]) -> list[str]:
    """Source names: each shard's folder name, with parent folders prepended only where names collide."""
    folders = sorted({u.rsplit("/", 1)[0] for u in urls})
    parts = {f: [p for p in f.split("/") if p and not p.endswith(":")] or ["root"] for f in folders}
    depth = 1
    while True:
        names = {f: _UNSAFE.sub("_", "-".join(p[-depth:])).strip("_") or "source" for f, p in parts.items()}
        if len(set(names.values())) == len(names) or depth >= max(len(p) for p in parts.values()):
            return [names[u.rsplit("/", 1)[0]] for u in urls]
        depth += 1


def list_shards(format: str, urls: str | Iterable[str]) -> list[ShardRef]:
    """Expand `urls` (brace ranges, globs, fsspec URLs, folders) into sorted `ShardRef`s of `format`."""
    if format not in FORMATS:
        raise ValueError(f"unknown shard format {format!r}; expected one of {sorted(FORMATS)}")
    suffixes = FORMATS[format]
    found = expand_urls(urls, suffixes=suffixes)
    wrong = [u for u in found if not u.lower().endswith(suffixes)]
    if wrong:
        raise ValueError(f"not {format} shards (expected {'/'.join(suffixes)} files): {wrong[:3]}")
    ids = _shard_ids(found, suffixes[0])
    return [
        ShardRef(shard_id, url, format, source)
        for shard_id, url, source in zip(ids, found, _sources(found), strict=True)
    ]


class ShardReader(CountingReader):
    """Iterates one shard's samples; `stats` counts samples, errors (by reason) and skipped members."""

    def __init__(self, shard: ShardRef) -> None:
        if shard.format not in FORMATS:
            raise ValueError(f"unknown shard format {shard.format!r}")
        self.shard = shard
        self.stats = ReadStats()

    def _iter(self) -> Iterator[Sample]:
        read = iter_tar if self.shard.format == "webdataset" else iter_parquet
        for sample in read(self.shard, self.stats):
            self.stats.add("samples")
            if sample.error is None:
                self.stats.add("ok")
            else:
                self.stats.add("errors")
                self.stats.add("error:" + sample.error.split(":", 1)[0])
            yield sample


def iter_shard(shard: ShardRef) -> Iterator[Sample]:
    """Yield every sample of `shard`, failures included (with `error` set)."""
    return iter(ShardReader(shard))


def decode_sample(sample: Sample, max_pixels: int | None = None):
    """Decode `sample.image_bytes` to RGB, updating width/height and `meta["source_mode"]`.

    Returns the PIL image, or None after setting `sample.error` (the failure reason).
    """
    if sample.error is not None:
        return None
    try:
        image = decode_image(sample.image_bytes or b"", max_pixels=max_pixels)
    except ImageError as exc:
        sample.error = exc.reason
        return None
    sample.width, sample.height = image.size
    sample.meta["source_mode"] = image.info.get("source_mode")
    return image
