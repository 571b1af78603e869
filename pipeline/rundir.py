"""The run directory (DESIGN.md section 5) and the only ways stages write to it: atomically.

Every output file is written under a temporary name in the same folder and renamed into place; a stage's or
shard's completion record is written last. A record names the fingerprint of the settings it was made with,
so a changed setting invalidates exactly what it affects.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def fingerprint(obj: Any) -> str:
    """Stable short hash of a JSON-able object (canonical key order)."""
    data = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def atomic_write_parquet(path: str | Path, table: pa.Table) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


@contextmanager
def atomic_parquet_writer(path: str | Path, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
    """A ParquetWriter on a temporary name, renamed into place when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    writer = pq.ParquetWriter(tmp, schema, compression="zstd")
    try:
        yield writer
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(tmp, path)


def atomic_replace_dir(tmp_dir: Path, final: Path) -> None:
    """Move a finished directory into place, replacing an older one."""
    final = Path(final)
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
        os.replace(tmp_dir, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_dir, final)


def read_json(path: str | Path) -> Any | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class RunDir:
    """Paths of one run. Everything a stage hands to the next lives here."""

    def __init__(self, root: str | Path):
        root = str(root)
        if root.startswith("file://"):
            root = root[len("file://") :]
        elif "://" in root:
            raise ValueError(
                f"run directory {root!r}: only local or shared-file-system paths (or file:// URIs) are "
                "supported; mount the bucket (e.g. s3fs, gcsfuse) at the same path on every node"
            )
        self.root = Path(root).resolve()

    run_json = property(lambda self: self.root / "run.json")
    dataset = property(lambda self: self.root / "dataset")
    rejected = property(lambda self: self.root / "rejected")
    failures = property(lambda self: self.root / "failures")
    stats_json = property(lambda self: self.root / "stats.json")
    state = property(lambda self: self.root / "_state")
    world = property(lambda self: self.root / "world")

    def checkpoint(self, role: str) -> Path:
        return self.root / "checkpoints" / role

    def work(self, stage: str) -> Path:
        """Intermediate files of a stage (the hand-off to later stages)."""
        return self.root / "_work" / stage

    # completion records ---------------------------------------------------------------------------
    def record_path(self, stage: str, shard: str | None = None) -> Path:
        return self.state / stage / (f"{shard}.json" if shard else "_stage.json")

    def done(self, stage: str, fp: str, shard: str | None = None) -> dict | None:
        """The completion record if it exists and was made with fingerprint `fp`."""
        rec = read_json(self.record_path(stage, shard))
        return rec if rec and rec.get("fingerprint") == fp else None

    def mark_done(self, stage: str, fp: str, payload: dict, shard: str | None = None) -> None:
        record = {**payload, "fingerprint": fp, "finished_at": round(time.time(), 3)}
        atomic_write_json(self.record_path(stage, shard), record)

    def failed_path(self, stage: str, shard: str) -> Path:
        return self.state / stage / "_failed" / f"{shard}.json"

    def mark_failed(self, stage: str, fp: str, payload: dict, shard: str) -> None:
        """A shard that failed: its error, kept until a re-run retries it successfully (not a completion)."""
        atomic_write_json(self.failed_path(stage, shard), {**payload, "fingerprint": fp})

    def clear_failed(self, stage: str, shard: str) -> None:
        self.failed_path(stage, shard).unlink(missing_ok=True)

    def failed(self, stage: str, fp: str | None = None) -> dict[str, dict]:
        """Failed-shard records of a stage (made with fingerprint `fp`, when given), by shard id."""
        recs = {p.stem: read_json(p) for p in sorted((self.state / stage / "_failed").glob("*.json"))}
        return {k: r for k, r in recs.items() if r and (fp is None or r.get("fingerprint") == fp)}

    def clear(self, stage: str) -> None:
        """Forget a stage's completion records (its outputs get overwritten by the re-run)."""
        shutil.rmtree(self.state / stage, ignore_errors=True)
