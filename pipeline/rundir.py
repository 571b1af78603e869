"""The run directory (DESIGN.md section 5) and the only ways stages write to it: atomically.

The run directory is a local (or shared) folder or an fsspec URL (s3://bucket/prefix); `RunDir` is the one
place that knows which (`pipeline.store`). Every output file is written atomically (a temporary name and a
rename; on an object store one PUT of the whole object); a stage's or shard's completion record is written
last. A record names the fingerprint of the settings it was made with,
so a changed setting invalidates exactly what it affects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from jade.atomic import (  # noqa: F401  (re-exported: stages write through the run directory's module)
    atomic_dir,
    atomic_parquet_writer,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    replace_dir,
)
from jade.pipeline.runlock import RunDirError, RunLock, RunLockedError
from jade.pipeline.store import LocalStore, ObjectStore, cache_root, is_url

STATE = "_state"  # completion records: _state/<stage>/<shard>.json, _state/<stage>/_stage.json

__all__ = [
    "atomic_dir",
    "atomic_parquet_writer",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_parquet",
    "replace_dir",
    "RunDir",
    "RunDirError",
    "RunLock",
    "RunLockedError",
    "fingerprint",
    "plain",
    "read_json",
]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING


def plain(obj: Any) -> Any:
    """JSON-able data of ``obj``: dataclasses as dicts, without the fields added `since` an earlier version
    while they hold their default (so a new option changes no fingerprint until it is used)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not (f.metadata.get("since") and getattr(obj, f.name) == _default(f))
        }
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    return obj


def fingerprint(obj: Any) -> str:
    """Stable short hash of a JSON-able object or dataclass (canonical key order)."""
    data = json.dumps(plain(obj), sort_keys=True, default=str, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def read_json(path: str | Path) -> Any | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class RunDir:
    """One run's directory, local or on an object store: the one place that knows which. Everything a stage
    hands to the next lives here: a stage reads the files an earlier stage declared (`rel`, `read_table`), never
    a path string of its own making, and every product is read and written through these methods, on paths
    relative to the run directory (`pipeline.store`: a local write is a temporary name and a rename, an object
    store's one PUT of the whole object).

    ``root`` (an absolute local path, or an fsspec URL such as ``s3://bucket/prefix``; ``file://`` is local).
    `url` says where it is either way; `root`, `path` and `work` are local paths and exist for local runs only;
    `scratch` is local working space: the run directory itself when it is local, a folder of the local cache
    (`pipeline.store.cache_root`) otherwise."""

    def __init__(self, root: str | Path):
        root = str(root)
        if root.startswith("file://"):
            root = root[len("file://") :]
        if is_url(root):
            try:
                self.store: LocalStore | ObjectStore = ObjectStore(root)
            except (ValueError, ImportError) as e:  # an unknown protocol, or its fsspec backend is missing
                raise ValueError(
                    f"run directory {root!r}: {e}. A run directory is a local or shared-file-system path, a "
                    "file:// URI, or an fsspec URL whose backend is installed (s3://: s3fs, in the [s3] extra; "
                    "gs://: gcsfs); its credentials come from the environment, never from the manifest"
                ) from None
        else:
            self.store = LocalStore(Path(root).resolve())
        self.local = self.store.local
        self.url = self.store.uri()

    def __repr__(self) -> str:
        return f"RunDir({self.url!r})"

    @property
    def root(self) -> Path:
        if not isinstance(self.store, LocalStore):
            raise RunDirError(f"{self.url} is on an object store: it has no local path")
        return self.store.root

    @property
    def scratch(self) -> Path:
        """Local working space of this run (temporary folders, the run's log before it is uploaded)."""
        if isinstance(self.store, LocalStore):
            return self.store.root
        name = self.url.rstrip("/").rsplit("/", 1)[-1]
        return cache_root() / "runs" / f"{hashlib.sha256(self.url.encode()).hexdigest()[:12]}-{name}"

    run_json = property(lambda self: self.root / "run.json")
    state = property(lambda self: self.root / STATE)

    def rel(self, files: Any, shard: str | None = None) -> str:
        """Where a stage's declared output lives, relative to the run directory (`pipeline.stage.ShardFiles` of
        ``shard``, or `StageFiles`)."""
        return files.path(shard) if shard is not None else files.path

    def path(self, files: Any, shard: str | None = None) -> Path:
        """The local path of a declared output (local runs)."""
        return self.root / self.rel(files, shard)

    def uri(self, rel: str = "") -> str:
        """The location of ``rel``: a local path, or a URL on the run's store."""
        return self.store.uri(rel)

    def work(self, stage: str) -> Path:
        """A stage's own scratch space (``_work/<its name>``), never read by another stage (local runs)."""
        return self.root / "_work" / stage

    # files, by path relative to the run directory ------------------------------------------------------
    def exists(self, rel: str) -> bool:
        return self.store.exists(rel)

    def read_bytes(self, rel: str) -> bytes:
        return self.store.read_bytes(rel)

    def read_many(self, rels: list[str]) -> dict[str, bytes]:
        """The bytes of each of ``rels`` that exists (an object store fetches them concurrently)."""
        return self.store.read_many(rels)

    def open(self, rel: str):
        """A binary file object for reading (the caller closes it)."""
        return self.store.open(rel)

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Atomically: a reader sees the old file or the whole new one."""
        self.store.write_bytes(rel, data)

    def read_json(self, rel: str) -> Any | None:
        """The JSON at ``rel``, or None if there is none (or it is not JSON)."""
        try:
            return json.loads(self.store.read_bytes(rel))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write_json(self, rel: str, obj: Any, indent: int | None = 2) -> None:
        self.write_bytes(rel, (json.dumps(obj, indent=indent, sort_keys=True, default=str) + "\n").encode())

    def read_table(self, files: Any, shard: str | None = None, columns: list[str] | None = None) -> pa.Table:
        """A table: a shard's of an earlier stage's declared output, or (``files`` a string) the file there."""
        rel = files if isinstance(files, str) else self.rel(files, shard)
        if isinstance(self.store, LocalStore):
            return pq.read_table(self.store.root / rel, columns=columns)
        with self.store.open(rel) as f:
            return pq.read_table(f, columns=columns)

    def write_parquet(self, rel: str, table: pa.Table) -> None:
        self.store.write_parquet(rel, table)

    def parquet_writer(self, rel: str, schema: pa.Schema):
        """A context manager: a ParquetWriter whose file appears at ``rel`` when the block ends without an
        error (nothing appears if it raises)."""
        return self.store.parquet_writer(rel, schema)

    def glob(self, pattern: str) -> list[str]:
        """The files matching ``pattern`` (relative, ``*``/``[0-9]``), sorted, relative to the run directory."""
        return self.store.glob(pattern)

    def size(self, rel: str) -> int:
        return self.store.size(rel)

    def remove(self, rel: str) -> None:
        self.store.remove(rel)

    def remove_tree(self, rel: str) -> None:
        self.store.remove_tree(rel)

    def put_dir(self, local: str | Path, rel: str, last: str | None = None) -> None:
        """Move the finished local folder ``local`` to ``rel``, replacing what is there: a rename on a file
        system; on an object store an upload file by file, ``last`` (its marker) removed first and written last."""
        self.store.put_dir(local, rel, last)

    def download(self, rel: str, local: str | Path) -> None:
        """Copy the folder ``rel`` to the local folder ``local`` (which it replaces)."""
        self.store.download(rel, Path(local))

    def local_dir(self, rel: str, last: str | None = None) -> Path:
        """A local folder with the contents of ``rel``: itself on a file system; on an object store a copy in
        the local cache, keyed by its marker ``last`` (a checkpoint's jade_model.json)."""
        return self.store.local_dir(rel, last)

    # completion records ---------------------------------------------------------------------------
    def record_rel(self, stage: str, shard: str | None = None) -> str:
        return f"{STATE}/{stage}/" + (f"{shard}.json" if shard else "_stage.json")

    def record_path(self, stage: str, shard: str | None = None) -> Path:
        return self.root / self.record_rel(stage, shard)

    def done(self, stage: str, fp: str, shard: str | None = None) -> dict | None:
        """The completion record if it exists and was made with fingerprint `fp`."""
        rec = self.read_json(self.record_rel(stage, shard))
        return rec if rec and rec.get("fingerprint") == fp else None

    def done_many(self, stage: str, fps: dict[str, str]) -> dict[str, dict | None]:
        """`done` for many shards ({shard: fingerprint}) at once (an object store fetches them concurrently)."""
        rels = {s: self.record_rel(stage, s) for s in fps}
        found = self.store.read_many(list(rels.values()))
        out: dict[str, dict | None] = {}
        for s, rel in rels.items():
            try:
                rec = json.loads(found[rel]) if rel in found else None
            except json.JSONDecodeError:
                rec = None
            out[s] = rec if isinstance(rec, dict) and rec.get("fingerprint") == fps[s] else None
        return out

    def mark_done(self, stage: str, fp: str, payload: dict, shard: str | None = None) -> None:
        record = {**payload, "fingerprint": fp, "finished_at": round(time.time(), 3)}
        self.write_json(self.record_rel(stage, shard), record)

    def failed_rel(self, stage: str, shard: str) -> str:
        return f"{STATE}/{stage}/_failed/{shard}.json"

    def failed_path(self, stage: str, shard: str) -> Path:
        return self.root / self.failed_rel(stage, shard)

    def mark_failed(self, stage: str, fp: str, payload: dict, shard: str) -> None:
        """A shard that failed: its error, kept until a re-run retries it successfully (not a completion)."""
        self.write_json(self.failed_rel(stage, shard), {**payload, "fingerprint": fp})

    def clear_failed(self, stage: str, shard: str) -> None:
        self.remove(self.failed_rel(stage, shard))

    def failed(self, stage: str, fp: str | None = None) -> dict[str, dict]:
        """Failed-shard records of a stage (made with fingerprint `fp`, when given), by shard id."""
        rels = self.glob(f"{STATE}/{stage}/_failed/*.json")
        recs = {rel.rsplit("/", 1)[-1][: -len(".json")]: self.read_json(rel) for rel in rels}
        return {k: r for k, r in recs.items() if r and (fp is None or r.get("fingerprint") == fp)}

    def clear(self, stage: str) -> None:
        """Forget a stage's completion records (its outputs get overwritten by the re-run)."""
        self.remove_tree(f"{STATE}/{stage}")
