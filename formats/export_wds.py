"""`jade export --format wds`: WebDataset tar shards, ``<key>.jpg`` + ``<key>.json`` per image.

Shard ``shard-NNNNNN.tar`` holds ``--shard-size`` images (the last one fewer), in the published order. The
``.json`` is the image's row without the image: ``key``, ``url``, ``caption``, ``width``, ``height``, ``qa``
(kept pairs; under `generate.condition: region` each also carries its ``jade_type`` and the ``region`` it was
asked about, as published), ``regions`` (dense captions, bbox as fractions x0 y0 x1 y1), ``provenance``. The ``.jpg`` is the
published bytes when they are a JPEG; any other format is converted to JPEG (quality 95) and counted.

The member name's key is the dataset key with every character other than letters, digits, ``_``, ``-`` and
``/`` written as ``%XX`` (a dot would split WebDataset's key from its extension); a key whose slashes would
make an absolute or empty path segment has its slashes written as ``%2F`` too.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

from jade.formats.images import decode_image

from .export_common import ExportError, Shard, rows

COLUMNS = ["key", "image", "url", "caption", "width", "height", "qa", "regions", "provenance"]
JPEG_QUALITY = 95
PREFIX = "shard"


def member_key(key: str) -> str:
    def enc(text: str, safe: str) -> str:
        return "".join(c if (c.isascii() and c.isalnum()) or c in safe else _pct(c) for c in text)

    k = enc(key, "_-/")
    if k.startswith("/") or k.endswith("/") or "//" in k or not k:
        k = enc(key, "_-")
    return k


def _pct(c: str) -> str:
    return "".join(f"%{b:02X}" for b in c.encode("utf-8"))


def as_jpeg(data: bytes) -> tuple[bytes, bool]:
    """(JPEG bytes, whether they were converted)."""
    if data[:3] == b"\xff\xd8\xff":
        return data, False
    buf = io.BytesIO()
    decode_image(data).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue(), True


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def shard_file(shard: Shard) -> str:
    return f"{PREFIX}-{shard.name}.tar"


class WdsWriter:
    def __init__(self, out: Path):
        self.out = out
        out.mkdir(parents=True, exist_ok=True)

    def __call__(self, shard: Shard) -> dict:
        final = self.out / shard_file(shard)
        tmp = final.with_name(f".{final.name}.tmp")
        counts = {"images": 0, "qa": 0, "regions": 0, "converted_to_jpeg": 0, "bytes": 0}
        with open(tmp, "wb") as f:
            with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for row in rows(shard, COLUMNS):
                    image = row.pop("image")
                    if image is None or not image.get("bytes"):
                        raise ExportError(
                            f"{row['key']}: the dataset holds no image bytes (publish.embed_images: false); "
                            "--format wds writes a .jpg per image"
                        )
                    jpg, converted = as_jpeg(image["bytes"])
                    key = member_key(row["key"])
                    _add(tar, f"{key}.jpg", jpg)
                    _add(tar, f"{key}.json", json.dumps(row, ensure_ascii=False).encode())
                    counts["images"] += 1
                    counts["qa"] += len(row["qa"])
                    counts["regions"] += len(row["regions"])
                    counts["converted_to_jpeg"] += converted
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        counts["bytes"] = final.stat().st_size
        return counts


CARD = """\
WebDataset tar shards (`shard-{{000000..{last}}}.tar`), {size} images a shard (the last may hold fewer), in
the published order; each image is `<key>.jpg` + `<key>.json`. Read them with
`webdataset.WebDataset("shard-{{000000..{last}}}.tar").decode("pil").to_tuple("jpg", "json")`.

- `.json`: the image's published row without the image: `key`, `url`, `caption`, `width`, `height`,
  `qa` (kept pairs: question, answer, type, filter_answer, score), `regions` (dense captions: bbox as
  fractions x0 y0 x1 y1, caption, score), `provenance`.
- `.jpg`: the published bytes when they are a JPEG; other formats converted to JPEG at quality 95
  (`converted_to_jpeg`).
- The member key is the dataset key with anything but letters, digits, `_`, `-` and `/` written `%XX`.
"""
REGION_CARD = """\
- This run asked its questions per region (`generate.condition: region`): each pair in `qa` also carries
  `jade_type` (the JADE type it was asked for) and `region` (`bbox` as fractions x0 y0 x1 y1, `caption`: the
  kept dense caption it was asked about), as published."""
