"""CC3M-like image-text pairs written as img2dataset 1.45 writes them in webdataset mode.

Per shard: ``{shard:05d}.tar`` (PAX tar from Python's tarfile, members ``.jpg``/``.json``/``.txt`` of a
sample together, samples in download-completion order, owner ``bigdata``, mode 0444, float mtimes),
``{shard:05d}.parquet`` (every sample, failed downloads included, same schema and column order as
img2dataset) and ``{shard:05d}_stats.json`` (written last, as img2dataset does). Keys are 9 digits: the
shard number then the index inside the shard. The truth of every downloaded image goes to
``truth/cc3m_scene_graphs.json``, keyed by the img2dataset key.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .alttext import alt_text
from .files import dump_json
from .scene import item_rng, make_scene, object_ids, render_jpeg, scene_graph

SCHEMA = pa.schema(
    [
        ("caption", pa.string()),
        ("url", pa.string()),
        ("key", pa.string()),
        ("status", pa.string()),
        ("error_message", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("original_width", pa.int32()),
        ("original_height", pa.int32()),
        ("exif", pa.string()),
        ("sha256", pa.string()),
    ]
)
URL = "http://sample-world.invalid/{key}.jpg"
ERRORS = (
    "HTTP Error 404: Not Found",
    "HTTP Error 403: Forbidden",
    "HTTP Error 410: Gone",
    "<urlopen error [Errno -2] Name or service not known>",
    "The read operation timed out",
)
FIRST_OBJECT_ID = 7_000_000  # truth object ids: FIRST_OBJECT_ID + 10 * sample index + k
EPOCH = 1_700_000_000.0


def shard_keys(n: int, shards: int) -> list[list[str]]:
    """img2dataset keys per shard: shard number (5 digits) then index in shard (at least 4 digits)."""
    per = math.ceil(n / shards) if n else 0
    digits = max(4, len(str(per - 1)))
    return [
        [f"{s:05d}{j:0{digits}d}" for j in range(min(per, n - s * per))] for s in range(shards) if s * per < n
    ]


def _sample(cfg, gi: int, key: str) -> dict:
    """One sample, download outcome included; the image bytes are kept under ``_jpg``."""
    scene = make_scene(item_rng(cfg.seed, "cc3m", gi), cfg.image_size, cfg.min_objects, cfg.max_objects)
    caption = alt_text(scene, item_rng(cfg.seed, "cc3m", gi, "alt"))
    fate = item_rng(cfg.seed, "cc3m", gi, "download")
    meta = {"caption": caption, "url": URL.format(key=key), "key": key}
    if fate.random() < cfg.cc3m_failed_fraction:
        meta |= {"status": "failed_to_download", "error_message": fate.choice(ERRORS)}
        meta |= dict.fromkeys(("width", "height", "original_width", "original_height", "exif", "sha256"))
        return meta
    jpg = render_jpeg(scene)
    size = cfg.image_size
    meta |= {"status": "success", "error_message": None, "width": size, "height": size}
    meta |= {"original_width": size, "original_height": size, "exif": "{}"}
    meta |= {"sha256": hashlib.sha256(jpg).hexdigest(), "_jpg": jpg, "_scene": scene}
    return meta


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o444, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "bigdata"
    tar.addfile(info, io.BytesIO(data))


def write_shard(out: Path, shard: int, samples: list[dict], rng, start: float) -> dict:
    """Write one shard's tar, parquet and stats from ``samples`` (in key order); return its stats."""
    # Download-completion order: each sample finishes a few places away from where it started.
    order = sorted(range(len(samples)), key=lambda j: j + rng.uniform(0, 4))
    buf, t, rows = io.BytesIO(), start, []
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for j in order:
            s = samples[j]
            t += rng.uniform(0.002, 0.02)
            meta = {k: v for k, v in s.items() if not k.startswith("_")}
            rows.append(meta)
            if meta["status"] != "success":
                continue
            members = {
                "jpg": s["_jpg"],
                "json": json.dumps(meta, indent=4).encode(),
                "txt": s["caption"].encode(),
            }
            for n, ext in enumerate(sorted(members)):
                _add(tar, f"{s['key']}.{ext}", members[ext], round(t + 0.0002 * n, 6))
    stem = f"{shard:05d}"
    (out / f"{stem}.tar").write_bytes(buf.getvalue())
    table = pa.Table.from_pydict({f.name: [r[f.name] for r in rows] for f in SCHEMA}, schema=SCHEMA)
    pq.write_table(table, out / f"{stem}.parquet")
    status = Counter(r["error_message"] or "success" for r in rows)
    ok = status.get("success", 0)
    end = round(t + rng.uniform(0.01, 0.05), 6)
    stats = {
        "count": len(rows),
        "successes": ok,
        "failed_to_download": len(rows) - ok,
        "failed_to_resize": 0,
        "duration": end - start,
        "start_time": start,
        "end_time": end,
        "status_dict": dict(status),
    }
    (out / f"{stem}_stats.json").write_text(json.dumps(stats, indent=4))
    return stats


def write_cc3m(root: Path, cfg) -> dict:
    """Write ``root/cc3m/*`` and ``root/truth/cc3m_scene_graphs.json``; return counts."""
    out = root / "cc3m"
    out.mkdir(parents=True, exist_ok=True)
    truth, gi, totals = {}, 0, Counter()
    for shard, keys in enumerate(shard_keys(cfg.cc3m_images, cfg.cc3m_shards)):
        samples = []
        for key in keys:
            s = _sample(cfg, gi, key)
            if s["status"] == "success":
                truth[key] = scene_graph(s["_scene"], object_ids(FIRST_OBJECT_ID + 10 * gi, s["_scene"]))
            samples.append(s)
            gi += 1
        start = EPOCH + (cfg.seed % 10_007) * 3600.0 + shard * 600.0
        stats = write_shard(out, shard, samples, item_rng(cfg.seed, "cc3m-shard", shard), start)
        totals.update({"shards": 1, "samples": stats["count"], "successes": stats["successes"]})
        totals["failed_to_download"] += stats["failed_to_download"]
    dump_json(root / "truth" / "cc3m_scene_graphs.json", truth)
    return {k: totals[k] for k in ("shards", "samples", "successes", "failed_to_download")}
