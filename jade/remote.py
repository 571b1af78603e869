"""Files at fsspec URLs (s3://, gs://, ...) for code that needs local files: a cached local copy of a file or a
folder (`localize`), and the mirror of a training run's resume checkpoints (`ResumeMirror`).

Copies live under `cache_root` (``JADE_CACHE``, else ~/.cache/jade), keyed by the URL and what the store says
of the content (sizes and ETags), so a copy is made once per machine and content; each is made in a temporary
folder and renamed into place, so concurrent workers of one machine never see half a copy. Endpoint and
credentials come from fsspec's usual places (for S3 the ``AWS_*`` variables, ~/.aws, or fsspec's config).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from pathlib import Path

__all__ = ["ResumeMirror", "cache_root", "exists", "is_url", "localize", "read_bytes"]


def is_url(location: str | Path) -> bool:
    """An fsspec URL other than file:// (a location that is not a local path)."""
    location = str(location)
    return "://" in location and not location.startswith("file://")


def cache_root() -> Path:
    """The local cache of copies of remote files: ``JADE_CACHE``, else ~/.cache/jade."""
    return Path(os.environ.get("JADE_CACHE") or Path.home() / ".cache" / "jade")


def _fs(url: str):
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, use_listings_cache=False)
    return fs, path.rstrip("/")


def read_bytes(location: str | Path) -> bytes:
    """The bytes of a local path or an fsspec URL."""
    if not is_url(location):
        return Path(location).read_bytes()
    fs, path = _fs(str(location))
    return fs.cat_file(path)


def exists(location: str | Path) -> bool:
    """Whether a local path or an fsspec URL exists."""
    if not is_url(location):
        return Path(str(location).removeprefix("file://")).exists()
    fs, path = _fs(str(location))
    return bool(fs.exists(path))


def _tag(info: dict) -> str:
    return f"{info.get('size')}:{info.get('ETag') or info.get('mtime') or info.get('LastModified')}"


def localize(location: str | Path, kind: str = "auto") -> str:
    """A local path with the contents of ``location``: itself when it is local; for a URL, a copy (a file, or
    a folder with everything under it) in the local cache. ``kind``: "file", "dir" or "auto" (what it is)."""
    location = str(location)
    if not is_url(location):
        return location[len("file://") :] if location.startswith("file://") else location
    fs, path = _fs(location)
    if kind == "auto":
        kind = "dir" if fs.isdir(path) else "file"
    if kind == "file":
        files = {"": fs.info(path)}
    else:
        found = fs.find(path, detail=True)
        files = {p[len(path) + 1 :]: info for p, info in sorted(found.items())}
        if not files:
            raise FileNotFoundError(f"{location}: no such folder")
    key = hashlib.sha256(location.encode())
    for rel, info in files.items():
        key.update(f"{rel}\0{_tag(info)}\0".encode())
    name = path.rsplit("/", 1)[-1]
    final = cache_root() / "copies" / key.hexdigest()[:16]
    if (final / name).exists():
        return str(final / name)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    if kind == "file":
        fs.get_file(path, str(tmp / name))
    else:
        (tmp / name).mkdir()
        rels = list(files)
        fs.get([f"{path}/{r}" for r in rels], [str(tmp / name / r) for r in rels])
    try:
        os.replace(tmp, final)
    except OSError:  # another process of this machine made the same copy first
        shutil.rmtree(tmp, ignore_errors=True)
    return str(final / name)


class ResumeMirror:
    """A training run's resume checkpoints (`models.train.ResumeState`) kept at a URL, through a local folder
    that the trainer reads and writes as it does on a file system (one per rank: ranks on one machine never
    share it).

    At the URL each checkpoint is a folder of its own, ``<url>/step-<step>/``, uploaded file by file with
    ``state.json`` last, and the older ones are removed after it: an object store has no rename, so a folder
    cannot be replaced at once, and a kill mid-upload must leave the previous checkpoint whole. Each rank's data
    position is ``<url>.rank<r>.json`` (one PUT). `pull` brings the newest complete checkpoint (and every
    rank's position) into the local folder, or empties it when there is none."""

    def __init__(self, url: str, rank: int):
        self.url = url.rstrip("/")
        self.fs, self.path = _fs(self.url)
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        name = self.path.rsplit("/", 1)[-1]
        self.local = cache_root() / "resume" / digest / f"rank{rank}" / name

    def _position(self, rank: int) -> str:
        return f"{self.path}.rank{rank}.json"

    def _steps(self) -> list[tuple[int, str]]:
        """The complete checkpoints at the URL (those with a state.json), oldest first."""
        found = []
        for p in self.fs.glob(f"{self.path}/step-*/state.json"):
            folder = p.rsplit("/", 1)[0]
            with contextlib.suppress(ValueError):
                found.append((int(folder.rsplit("-", 1)[-1]), folder))
        return sorted(found)

    def push_file(self, local: Path, rank: int) -> None:
        """A rank's data position (``local``, written by the trainer) to the URL."""
        self.fs.pipe_file(self._position(rank), local.read_bytes())

    def push_dir(self, step: int) -> None:
        """The local checkpoint of ``step`` to the URL (state.json last), then the older ones removed."""
        folder = f"{self.path}/step-{step:09d}"
        files = sorted(p.name for p in self.local.iterdir() if p.is_file() and p.name != "state.json")
        self.fs.put([str(self.local / f) for f in files], [f"{folder}/{f}" for f in files])
        self.fs.put_file(str(self.local / "state.json"), f"{folder}/state.json")
        for s, old in self._steps():
            if s != step:
                self.fs.rm(old, recursive=True)

    def pull(self, world_size: int) -> None:
        """The newest complete checkpoint and every rank's position into the local folder (or none)."""
        shutil.rmtree(self.local, ignore_errors=True)
        for r in range(world_size):
            self.local.with_name(f"{self.local.name}.rank{r}.json").unlink(missing_ok=True)
        steps = self._steps()
        if not steps:
            return
        folder = steps[-1][1]
        tmp = self.local.with_name(f".{self.local.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.mkdir(parents=True)
        names = [p.rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False)]
        self.fs.get([f"{folder}/{n}" for n in names], [str(tmp / n) for n in names])
        os.replace(tmp, self.local)
        for r in range(world_size):
            with contextlib.suppress(FileNotFoundError):
                self.fs.get_file(
                    self._position(r), str(self.local.with_name(f"{self.local.name}.rank{r}.json"))
                )

    def clear(self) -> None:
        """Remove the checkpoints and positions at the URL (and the local folder)."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path, recursive=True)
        for p in self.fs.glob(f"{self.path}.rank*.json"):
            self.fs.rm_file(p)
        shutil.rmtree(self.local, ignore_errors=True)
