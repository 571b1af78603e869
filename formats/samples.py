"""The records of image-text shards: `ShardRef` (one shard file) and `Sample` (one image-text pair).

A `Sample` with `error` set is a failure to be recorded (in `failures/`), never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FORMATS = {"webdataset": (".tar",), "parquet": (".parquet",)}


@dataclass(frozen=True)
class ShardRef:
    """One shard: a stable id derived from the file name (e.g. "00000"), its URL and format."""

    shard_id: str
    url: str
    format: str


@dataclass
class Sample:
    """One image-text pair read from a shard.

    `key` is the sample's key within its source (img2dataset's 9-digit key, the tar member stem, or
    `<shard_id>:<row>`); `width`/`height` come from the source's metadata when it has them (None
    otherwise: decode to know); `meta` holds the remaining source metadata; `error` is the failure
    reason (then `image_bytes` is usually None).
    """

    key: str
    url: str | None = None
    caption: str | None = None
    image_bytes: bytes | None = None
    width: int | None = None
    height: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def failure_reason(status: str | None, message: str | None) -> str:
    """img2dataset status + error_message → failure reason ("download failed: HTTP Error 404: ...")."""
    prefix = {"failed_to_download": "download failed", "failed_to_resize": "resize failed"}.get(
        status or "", str(status or "failed")
    )
    return f"{prefix}: {message or 'no error message'}"


def caption_or_none(value: Any) -> str | None:
    """A caption as given, or None when it is absent or blank."""
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    return text if text.strip() else None
