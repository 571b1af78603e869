"""Parquet image-text shards: img2dataset's parquet output and Hugging Face `Image` datasets.

Layouts recognized from the schema:
- img2dataset: image bytes in a binary column `jpg` (or `png`/`webp`), `caption` (or `txt`), `key`,
  `url`, `status`, `error_message`, `width`, `height`; rows with status != "success" are failures.
- Hugging Face: an `Image` column (struct {bytes, path}, named in the `huggingface` schema metadata, or
  any struct with a `bytes` field) and a caption/text column; keys from `key`/`id` or `<shard>:<row>`.
  A cell holding only a `path` is read from there, as `datasets` does (absolute path or URL, or relative
  to the shard's folder); one that cannot be read is a "missing image file" failure.
Files are read in small record batches, one row group at a time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from .common import ReadStats
from .errors import FormatError
from .samples import Sample, ShardRef, caption_or_none, failure_reason

BINARY_IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp", "image", "img")
CAPTION_COLUMNS = ("caption", "txt", "text", "alt_text", "alt", "captions")
KEY_COLUMNS = ("key", "id")
BATCH_ROWS = 64


@dataclass
class _Layout:
    image: str
    image_is_struct: bool
    caption: str | None
    key: str | None
    columns: list[str]  # everything read: image, caption, key and the scalar metadata columns


def _hf_image_columns(schema: pa.Schema) -> list[str]:
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return []
    try:
        features = json.loads(raw).get("info", {}).get("features", {})
    except (ValueError, AttributeError):
        return []
    return [
        name for name, feat in features.items() if isinstance(feat, dict) and feat.get("_type") == "Image"
    ]


def _is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)


def _is_image_struct(t: pa.DataType) -> bool:
    return pa.types.is_struct(t) and t.get_field_index("bytes") >= 0


def _layout(url: str, schema: pa.Schema) -> _Layout:
    names = schema.names
    image, is_struct = None, False
    for name in _hf_image_columns(schema) + [n for n in names if _is_image_struct(schema.field(n).type)]:
        if name in names and _is_image_struct(schema.field(name).type):
            image, is_struct = name, True
            break
    if image is None:
        image = next(
            (n for n in BINARY_IMAGE_COLUMNS if n in names and _is_binary(schema.field(n).type)), None
        )
    if image is None:
        raise FormatError(
            url, None, f"no image column (a binary `jpg`/`png`/`webp` or an Image struct) in {names}"
        )
    text = [
        n
        for n in names
        if pa.types.is_string(schema.field(n).type) or pa.types.is_large_string(schema.field(n).type)
    ]
    caption = next((n for n in CAPTION_COLUMNS if n in text), None)
    key = next((n for n in KEY_COLUMNS if n in names), None)
    scalar = [
        n
        for n in names
        if n != image and not (pa.types.is_nested(schema.field(n).type) or _is_binary(schema.field(n).type))
    ]
    return _Layout(image, is_struct, caption, key, [image] + scalar)


def _external(path: str, shard_url: str) -> bytes | None:
    """The file an Image cell names instead of holding bytes (as `datasets` reads it): an absolute path or
    URL, or a path relative to the shard's folder. None when it cannot be read."""
    url = path if "://" in path or path.startswith("/") else f"{shard_url.rsplit('/', 1)[0]}/{path}"
    try:
        with fsspec.open(url, "rb") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def _image_bytes(value, is_struct: bool, shard_url: str = "") -> tuple[bytes | None, str | None]:
    """(bytes, error) from a cell of the image column."""
    if is_struct:
        if value is None:
            return None, "missing image"
        data, path = value.get("bytes"), value.get("path")
        if data is None and path:
            data = _external(path, shard_url)
            if data is None:
                return None, f"missing image file: no bytes, and {path!r} cannot be read"
        if data is None:
            return None, "missing image"
        value = data
    if value is None:
        return None, "missing image"
    return (bytes(value), None) if len(value) else (None, "empty image")


def _row_sample(row: dict, index: int, shard: ShardRef, layout: _Layout, seen: set[str]) -> Sample:
    raw_key = row.pop(layout.key) if layout.key else None
    key = str(raw_key) if raw_key is not None else f"{shard.shard_id}:{index}"
    caption = caption_or_none(row.pop(layout.caption)) if layout.caption else None
    url, width, height = row.pop("url", None), row.pop("width", None), row.pop("height", None)
    cell = row.pop(layout.image)
    sample = Sample(key, url, caption, None, width, height, meta=row)
    status = row.get("status")
    if key in seen:
        sample.error = "duplicate key"
        return sample
    seen.add(key)
    if status is not None and status != "success":
        sample.error = failure_reason(status, row.get("error_message"))
        return sample
    data, error = _image_bytes(cell, layout.image_is_struct, shard.url)
    if error is None and caption is None:
        error = "missing caption"
    sample.error, sample.image_bytes = error, data if error is None else None
    if not layout.image_is_struct:
        sample.meta["image_ext"] = layout.image if layout.image not in ("image", "img") else None
    return sample


def iter_parquet(shard: ShardRef, stats: ReadStats) -> Iterator[Sample]:
    """Yield every row of a parquet shard as a Sample (failures with `error` set)."""
    fs, path = fsspec.core.url_to_fs(shard.url)
    with fs.open(path, "rb") as f:
        try:
            pf = pq.ParquetFile(f)
        except pa.ArrowInvalid as exc:
            yield Sample(f"{shard.shard_id}:unreadable", error=f"unreadable parquet: {exc}")
            return
        layout = _layout(shard.url, pf.schema_arrow)
        if layout.caption is None:
            stats.add("no_caption_column")
        seen: set[str] = set()
        index = 0
        try:
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=layout.columns):
                for row in batch.to_pylist():
                    yield _row_sample(row, index, shard, layout, seen)
                    index += 1
        except (pa.ArrowInvalid, OSError) as exc:
            if isinstance(exc, OSError) and not isinstance(exc, pa.ArrowException):
                raise  # I/O trouble (network, permissions) is not a property of the data
            yield Sample(f"{shard.shard_id}:truncated", error=f"unreadable parquet after row {index}: {exc}")
