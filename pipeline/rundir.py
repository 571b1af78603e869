"""The run directory (DESIGN.md section 5) and the only ways stages write to it: atomically.

Every output file is written under a temporary name in the same folder and renamed into place; a stage's or
shard's completion record is written last. A record names the fingerprint of the settings it was made with,
so a changed setting invalidates exactly what it affects.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import socket
import sys
import threading
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
    """Paths of one run. Everything a stage hands to the next lives here: a stage reads the files an earlier
    stage declared (`path`, `read_table`), never a path string of its own making."""

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
    state = property(lambda self: self.root / "_state")

    def path(self, files: Any, shard: str | None = None) -> Path:
        """Where a stage's declared output lives (`pipeline.stage.ShardFiles` of ``shard``, or `StageFiles`)."""
        return self.root / (files.path(shard) if shard is not None else files.path)

    def read_table(self, files: Any, shard: str, columns: list[str] | None = None) -> pa.Table:
        """A shard's table of an earlier stage's declared output."""
        return pq.read_table(self.path(files, shard), columns=columns)

    def work(self, stage: str) -> Path:
        """A stage's own scratch space (``_work/<its name>``), never read by another stage."""
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


class RunLockedError(RuntimeError):
    """Another live run holds the run directory (the message names it)."""


class RunDirError(RuntimeError):
    """The run directory cannot be made or written (the message names it and why)."""


class RunLock:
    """An exclusive lock on a run directory while a run holds it: ``<run>/.lock`` holds the holder's host, pid,
    start time and command, and is refreshed every `HEARTBEAT_S` seconds. A second run stops at once with a
    message naming the holder. A lock left by a killed run is stale, and taken over: on the same host when its
    process is gone, on another host when it has not been refreshed for `STALE_S` seconds."""

    HEARTBEAT_S = 30.0
    STALE_S = 300.0

    def __init__(self, run: RunDir):
        self.path = run.root / ".lock"
        self._stop: threading.Event | None = None
        self.me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": round(time.time(), 3),
            "command": " ".join(sys.argv)[:300],
        }

    def __enter__(self) -> RunLock:
        try:
            return self._take()
        except OSError as e:
            raise RunDirError(
                f"{self.path.parent}: cannot use it as a run directory: {e.strerror or e}"
            ) from None

    def _take(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_json(self.path) or {}
                if not self._stale(holder):
                    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
                    raise RunLockedError(
                        f"{self.path.parent} is in use by another run: host {holder.get('host')}, pid "
                        f"{holder.get('pid')}, since {since} ({holder.get('command', '?')}). Wait for it to "
                        f"end; if that process is gone for good, remove {self.path}"
                    ) from None
                # stale: move it aside atomically (only one taker wins the rename), then try again
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.path, self.path.with_name(f".lock.stale-{os.getpid()}"))
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.me, f)
            self._stop = threading.Event()
            threading.Thread(target=self._beat, daemon=True).start()
            return self
        raise RunLockedError(f"{self.path}: could not take the lock")

    def _stale(self, holder: dict) -> bool:
        if not holder:  # unreadable or empty: a lock being written right now, or a crash mid-write
            return time.time() - _mtime(self.path) > self.STALE_S
        if holder.get("host") == self.me["host"]:
            return not _alive(int(holder.get("pid", 0)))
        return time.time() - _mtime(self.path) > self.STALE_S

    def _beat(self) -> None:
        while self._stop is not None and not self._stop.wait(self.HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def __exit__(self, *exc) -> None:
        if self._stop is not None:
            self._stop.set()
        if (read_json(self.path) or {}).get("pid") == self.me["pid"]:
            self.path.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return time.time()


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
