"""The records of image-text shards: `ShardRef` (one shard file) and `Sample` (one image-text pair).

A `Sample` with `error` set is a failure to be recorded (in `failures/`), never silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "FORMATS",
    "Sample",
    "ShardRef",
    "caption_or_none",
    "failure_reason",
]

FORMATS = {"webdataset": (".tar",), "parquet": (".parquet",)}


@dataclass(frozen=True)
class ShardRef:
    """One shard: a stable id derived from the file name (e.g. "00000"), its URL and format, and its source:
    the name of the folder it is in (e.g. "cc3m"), which namespaces its keys. img2dataset numbers keys from
    0 in every output folder, so keys are unique only within a source: `key()` makes them unique."""

    shard_id: str
    url: str
    format: str
    source: str = ""

    def key(self, source_key: str) -> str:
        """The run-wide key of a sample whose key within its source is ``source_key``."""
        return f"{self.source}/{source_key}" if self.source else source_key

    def source_key(self, key: str) -> str:
        """Inverse of `key`."""
        return key[len(self.source) + 1 :] if self.source and key.startswith(self.source + "/") else key


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
