"""Webdataset tar shards (img2dataset output or generic), read without extracting or loading whole.

Pass 1 walks the tar headers only (tarfile seeks over member data) and groups members by key, keeping
just offsets and sizes, so a key's members may be anywhere in the tar. Pass 2 reads each key's members
by offset, in order of first appearance. Member names are never used as filesystem paths.

img2dataset writes failed downloads only into the sidecar `NNNNN.parquet` (status, error_message): they
are yielded as error samples. A truncated or unreadable tar yields the complete samples, then error
samples for the affected keys (those known from the tar and, with a sidecar, every success listed there
but missing from the tar), or one `<shard_id>:truncated` sample when the lost keys cannot be known.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from .common import ReadStats
from .samples import Sample, ShardRef, caption_or_none, failure_reason

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")
CAPTION_EXTS = ("txt", "caption", "text")
_SIDECAR_COLUMNS = ("key", "status", "error_message", "url", "caption")


@dataclass
class _Group:
    """The members of one key (or of one of its duplicates, `gen` > 0): ext → (offset, size)."""

    key: str
    gen: int
    first: int
    members: dict[str, tuple[int, int]] = field(default_factory=dict)
    truncated: bool = False


def _split_name(name: str) -> tuple[str, str] | None:
    """webdataset convention: key = path up to the first dot of the base name, ext = the rest."""
    if name.startswith("./"):
        name = name[2:]
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not stem or not dot or not ext:
        return None
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _index(f, size: int, stats: ReadStats) -> tuple[list[_Group], str | None]:
    """Pass 1: (groups in order of first appearance, damage reason or None).

    On damage, the key of the last member read is marked truncated too: its remaining members may
    have been lost with the rest of the file.
    """
    try:
        tar = tarfile.open(fileobj=f, mode="r:")
    except (tarfile.TarError, EOFError) as exc:
        return [], f"unreadable tar: {exc}"
    groups: list[_Group] = []
    last: list[_Group] = []
    damage = _walk(tar, f, size, stats, groups, last)
    if damage and last:
        last[0].truncated = True
    return groups, damage


def _walk(tar, f, size: int, stats: ReadStats, groups: list[_Group], last: list[_Group]) -> str | None:
    """Read member headers into `groups`; `last` ends up holding the last member's group."""
    by_key: dict[str, list[_Group]] = {}
    while True:
        try:
            info = tar.next()
        except (tarfile.TarError, EOFError) as exc:
            return f"truncated tar: {exc} (after byte {tar.offset})"
        if info is None:
            f.seek(tar.offset)
            block = f.read(tarfile.BLOCKSIZE)
            if len(block) < tarfile.BLOCKSIZE:
                return f"truncated tar: no end-of-archive marker (file ends at byte {size})"
            return f"truncated tar: invalid header at byte {tar.offset}" if block.strip(b"\0") else None
        tar.members.clear()  # keep nothing but our own offsets
        if not info.isfile():
            stats.add("skipped_non_file_members")
            continue
        name = info.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        split = _split_name(name)
        if split is None:
            stats.add("skipped_unnamed_members")
            continue
        key, ext = split
        same_key = by_key.setdefault(key, [])
        group = next((g for g in same_key if ext not in g.members), None)
        if group is None:
            group = _Group(key, len(same_key), info.offset)
            same_key.append(group)
            groups.append(group)
        group.members[ext] = (info.offset_data, info.size)
        last[:] = [group]
        end = info.offset_data + info.size
        if end > size:
            return (
                f"truncated tar: member {name!r} ends at byte {end}, past the end of the file ({size} bytes)"
            )


def _read(f, member: tuple[int, int]) -> bytes:
    offset, size = member
    f.seek(offset)
    return f.read(size)


def _sample(f, group: _Group, stats: ReadStats) -> Sample:
    """Pass 2 for one key: read its members and build the Sample (or the error Sample)."""
    meta: dict = {}
    if "json" in group.members:
        try:
            meta = json.loads(_read(f, group.members["json"]))
            meta = meta if isinstance(meta, dict) else {"json": meta}
        except ValueError as exc:
            meta = {"json_error": str(exc)}
    url, json_caption = meta.pop("url", None), meta.pop("caption", None)
    width, height = meta.pop("width", None), meta.pop("height", None)
    meta.pop("key", None)
    caption = None
    cap_ext = next((e for e in CAPTION_EXTS if e in group.members), None)
    if cap_ext is not None:
        caption = _read(f, group.members[cap_ext]).decode("utf-8", "replace").rstrip("\r\n")
    caption = caption_or_none(caption) or caption_or_none(json_caption)
    sample = Sample(group.key, url, caption, None, width, height, meta)
    img_ext = next((e for e in IMAGE_EXTS if e in group.members), None)
    if img_ext is None:
        sample.error = "missing image"
        return sample
    sample.meta["image_ext"] = img_ext
    data = _read(f, group.members[img_ext])
    if len(data) < group.members[img_ext][1]:
        sample.error = "truncated tar: image member is cut short"
    elif not data:
        sample.error = "empty image"
    elif caption is None:
        sample.error = "missing caption"
    else:
        sample.image_bytes = data
    unknown = set(group.members) - {img_ext, cap_ext, "json"}
    stats.add("skipped_extra_members", len(unknown))
    return sample


def _sidecar(shard: ShardRef, stats: ReadStats) -> list[dict] | None:
    """Rows of img2dataset's per-shard parquet (key, status, error_message, url, caption), if any."""
    base = shard.url[: -len(".tar")] if shard.url.endswith(".tar") else None
    if base is None:
        return None
    fs, path = fsspec.core.url_to_fs(base + ".parquet")
    if not fs.exists(path):
        return None
    with fs.open(path, "rb") as f:
        try:
            pf = pq.ParquetFile(f)
            names = set(pf.schema_arrow.names)
            if not {"key", "status"} <= names:
                stats.add("sidecar_ignored")
                return None
            table = pf.read(columns=[c for c in _SIDECAR_COLUMNS if c in names])
        except pa.ArrowInvalid:
            stats.add("sidecar_unreadable")
            return None
    return table.to_pylist()


def _expected_successes(shard: ShardRef) -> int | None:
    fs, path = fsspec.core.url_to_fs(shard.url[: -len(".tar")] + "_stats.json")
    try:
        with fs.open(path, "rb") as f:
            value = json.load(f).get("successes")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, int) else None


def iter_tar(shard: ShardRef, stats: ReadStats) -> Iterator[Sample]:
    """Yield every sample of a webdataset tar shard: complete ones, then failures (see module doc)."""
    fs, path = fsspec.core.url_to_fs(shard.url)
    sidecar = _sidecar(shard, stats)
    listed = {str(row.get("key")): row for row in sidecar or []}
    tar_keys: set[str] = set()
    ok_images = 0
    with fs.open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        groups, damage = _index(f, size, stats)
        for group in groups:
            tar_keys.add(group.key)
            row = listed.get(group.key, {})
            if group.gen > 0:
                yield Sample(group.key, row.get("url"), meta={"duplicate": group.gen}, error="duplicate key")
            elif group.truncated:
                yield Sample(group.key, row.get("url"), row.get("caption"), error=damage)
            else:
                sample = _sample(f, group, stats)
                ok_images += "image_ext" in sample.meta
                yield sample
    if damage:
        stats.add("damaged_shards")
    for row in sidecar or []:
        key, status = str(row.get("key")), row.get("status")
        if status != "success" and key not in tar_keys:
            meta = {"status": status}
            reason = failure_reason(status, row.get("error_message"))
            yield Sample(key, row.get("url"), row.get("caption"), meta=meta, error=reason)
        elif status == "success" and key not in tar_keys:
            reason = damage or "missing from tar: listed as a success in the sidecar parquet"
            yield Sample(key, row.get("url"), row.get("caption"), meta={"status": status}, error=reason)
    if damage and sidecar is None:
        kind = "unreadable" if damage.startswith("unreadable") else "truncated"
        yield Sample(f"{shard.shard_id}:{kind}", error=damage)
    expected = _expected_successes(shard) if shard.url.endswith(".tar") else None
    if expected is not None and expected != ok_images:
        stats.add("stats_json_mismatch")
