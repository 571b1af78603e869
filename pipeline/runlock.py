"""The lock on a run directory while a run holds it: ``<run>/.lock`` names the holder (host, pid, start time,
command) and is refreshed every `RunLock.HEARTBEAT_S` seconds. A second run stops at once with a message naming
the holder. A lock left by a killed run is stale, and taken over: on the same host when its process is gone, on
another host when it has not been refreshed for `RunLock.STALE_S` seconds.

How it is made safe:

- a local or shared file system: the lock is created with ``O_CREAT | O_EXCL`` (one creator wins); a stale
  lock is moved aside with a rename (one taker wins the rename), then created again; the heartbeat touches its
  modification time;
- an object store (no rename): the lock is created with a conditional PUT that succeeds only if no object is
  there (S3's ``If-None-Match: *``; one creator wins, the others get 412). A stale lock is taken over with a PUT
  conditional on the very version that was judged stale (``If-Match: <its ETag>``): of two takers, or a taker
  and a holder that was only slow, exactly one write succeeds. The heartbeat rewrites the lock conditionally on
  the version it wrote last, so a holder whose lock was taken over learns it (and says so) instead of
  overwriting the new holder's; the release deletes only its own version. Staleness across hosts is judged on
  the object's last-modified time (the store's clock) against this host's clock: `STALE_S` (5 minutes) is far
  above the clock skew of a cluster. On a store without conditional requests (fsspec's generic
  create-if-absent checks, then writes) the lock is advisory: a taker reads the lock back after writing it,
  which narrows but does not close the race.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from typing import Any

from jade.pipeline.store import VersionChanged

__all__ = ["RunDirError", "RunLock", "RunLockedError"]

log = logging.getLogger("jade")
LOCK = ".lock"


class RunLockedError(RuntimeError):
    """Another live run holds the run directory (the message names it)."""


class RunDirError(RuntimeError):
    """The run directory cannot be made or written (the message names it and why)."""


class RunLock:
    """An exclusive lock on a run directory (`pipeline.rundir.RunDir`, local or on an object store)."""

    HEARTBEAT_S = 30.0
    STALE_S = 300.0

    def __init__(self, run: Any):
        self.run = run
        self.path = run.root / LOCK if run.local else None
        self.where = run.uri(LOCK)
        self._stop: threading.Event | None = None
        self._etag: str | None = None  # an object store's version of the lock we wrote last
        self.lost = False  # the lock was taken over while we held it (object stores: the heartbeat says so)
        self.me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": round(time.time(), 3),
            "command": " ".join(sys.argv)[:300],
        }

    def __enter__(self) -> RunLock:
        try:
            self._take() if self.run.local else self._take_object()
        except OSError as e:
            raise RunDirError(
                f"{self.run.url}: cannot use it as a run directory: {e.strerror or e}"
            ) from None
        self._stop = threading.Event()
        threading.Thread(target=self._beat, daemon=True).start()
        return self

    def _locked(self, holder: dict) -> RunLockedError:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
        return RunLockedError(
            f"{self.run.url} is in use by another run: host {holder.get('host')}, pid "
            f"{holder.get('pid')}, since {since} ({holder.get('command', '?')}). Wait for it to "
            f"end; if that process is gone for good, remove {self.where}"
        )

    def _stale(self, holder: dict, mtime: float | None) -> bool:
        age = time.time() - (mtime if mtime is not None else time.time())
        if holder and holder.get("host") == self.me["host"]:
            return not _alive(int(holder.get("pid", 0)))
        # another host's, or unreadable (being written right now, or a crash mid-write): by its heartbeat
        return age > self.STALE_S

    # a local or shared file system ------------------------------------------------------------------
    def _take(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _json(self.path.read_bytes) or {}
                if not self._stale(holder, _mtime(self.path)):
                    raise self._locked(holder) from None
                # stale: move it aside atomically (only one taker wins the rename), then try again
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.path, self.path.with_name(f".lock.stale-{os.getpid()}"))
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.me, f)
            return
        raise RunLockedError(f"{self.path}: could not take the lock")

    # an object store -------------------------------------------------------------------------------
    def _take_object(self) -> None:
        store = self.run.store
        self.me["token"] = uuid.uuid4().hex  # tells our own lock from another's with the same host and pid
        data = json.dumps(self.me).encode()
        for _ in range(5):
            try:
                self._etag = store.create(LOCK, data)
                return
            except FileExistsError:
                pass
            try:
                seen = store.stat(LOCK)
                holder = _json(lambda: store.read_bytes(LOCK)) or {}
            except FileNotFoundError:
                continue  # released meanwhile: create it again
            if holder.get("token") == self.me["token"]:  # our own create, whose answer was lost and retried
                self._etag = seen["etag"]
                return
            if not self._stale(holder, seen["mtime"]):
                raise self._locked(holder)
            log.info(
                "run lock: taking over a stale lock (host %s, pid %s)", holder.get("host"), holder.get("pid")
            )
            try:
                self._etag = store.replace_if(LOCK, data, seen["etag"])
            except VersionChanged:
                continue  # another taker won, or the holder was alive after all: look again
            if (
                store.conditional()
                or (_json(lambda: store.read_bytes(LOCK)) or {}).get("token") == self.me["token"]
            ):
                return
        raise RunLockedError(f"{self.where}: could not take the lock")

    # both --------------------------------------------------------------------------------------------
    def _beat(self) -> None:
        while self._stop is not None and not self._stop.wait(self.HEARTBEAT_S):
            if self.path is not None:  # a file system
                with contextlib.suppress(OSError):
                    os.utime(self.path)
                continue
            beat = json.dumps({**self.me, "beat": round(time.time(), 3)}).encode()
            try:
                self._etag = self.run.store.replace_if(LOCK, beat, self._etag)
            except VersionChanged:
                self.lost = True
                holder = _json(lambda: self.run.store.read_bytes(LOCK)) or {}
                log.error(
                    "run lock: %s was taken over by host %s, pid %s while this run held it (its heartbeat was "
                    "late by more than %.0fs): two runs may now write this run directory",
                    self.where,
                    holder.get("host"),
                    holder.get("pid"),
                    self.STALE_S,
                )
                return
            except OSError as e:  # a network error: try again at the next beat
                log.warning("run lock: heartbeat failed: %s", e)

    def __exit__(self, *exc) -> None:
        if self._stop is not None:
            self._stop.set()
        if self.run.local:
            assert self.path is not None
            if (_json(self.path.read_bytes) or {}).get("pid") == self.me["pid"]:
                self.path.unlink(missing_ok=True)
        elif not self.lost:
            with contextlib.suppress(VersionChanged, OSError):
                self.run.store.delete_if(LOCK, self._etag)


def holder(run: Any) -> dict | None:
    """Who holds ``run``'s lock (its record), or None."""
    return _json(lambda: run.read_bytes(LOCK))


def _json(read) -> dict | None:
    try:
        value = json.loads(read())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _mtime(path) -> float:
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
