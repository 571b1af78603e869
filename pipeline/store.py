"""Where a run directory's files live: a local (or shared POSIX) folder, `LocalStore`, or an fsspec URL
(``s3://bucket/prefix``, ``gs://...``, ``memory://...``), `ObjectStore`, behind one set of methods on paths
relative to the run directory. `pipeline.rundir.RunDir` holds one; nothing else needs to know which.

Atomic writes. On a file system a file is written under a temporary name and renamed into place
(`jade.atomic`), so a reader sees the old file or the whole new one. An object store has no rename, but never
shows part of an object: a PUT replaces the whole object at once, and a multipart upload becomes visible only
when it is completed. So every write to an `ObjectStore` is one PUT of the complete object (or one completed
multipart upload, for a Parquet file streamed through a local temporary file). A folder (a checkpoint, the
sample world) cannot be swapped in at once: it is uploaded file by file, its marker file (``last``: a
checkpoint's jade_model.json, the world's world.json) is removed first and written last, so a reader that
sees the marker sees the complete folder; a stage's completion record comes after that.

Credentials and endpoint of a store come from where fsspec and its backends look (for S3: ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ~/.aws; or fsspec's config, e.g.
``FSSPEC_S3_ENDPOINT_URL``), never from a manifest. Listings are not cached (other processes write the same
prefix).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from jade.atomic import atomic_parquet_writer, atomic_write_bytes, atomic_write_parquet, replace_dir
from jade.remote import cache_root, is_url, localize

__all__ = ["LocalStore", "ObjectStore", "cache_root", "is_url"]


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")  # the same bytes `atomic_write_parquet` writes to a file
    return buf.getvalue().to_pybytes()


class LocalStore:
    """A run directory on a local or shared POSIX file system: temporary name, then rename."""

    local = True

    def __init__(self, root: Path):
        self.root = root

    def uri(self, rel: str = "") -> str:
        return str(self.root / rel) if rel else str(self.root)

    def exists(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def read_bytes(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def open(self, rel: str) -> IO[bytes]:
        return open(self.root / rel, "rb")  # noqa: SIM115 - the caller closes it

    def read_many(self, rels: list[str]) -> dict[str, bytes]:
        """The bytes of each of ``rels`` that exists."""
        out = {}
        for rel in rels:
            with contextlib.suppress(FileNotFoundError):
                out[rel] = (self.root / rel).read_bytes()
        return out

    def write_bytes(self, rel: str, data: bytes) -> None:
        atomic_write_bytes(self.root / rel, data)

    def write_parquet(self, rel: str, table: pa.Table) -> None:
        atomic_write_parquet(self.root / rel, table)

    @contextmanager
    def parquet_writer(self, rel: str, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
        with atomic_parquet_writer(self.root / rel, schema) as writer:
            yield writer

    def glob(self, pattern: str) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.glob(pattern) if p.is_file())

    def size(self, rel: str) -> int:
        return (self.root / rel).stat().st_size

    def remove(self, rel: str) -> None:
        (self.root / rel).unlink(missing_ok=True)

    def remove_tree(self, rel: str) -> None:
        shutil.rmtree(self.root / rel, ignore_errors=True)

    def put_dir(self, local: str | Path, rel: str, last: str | None = None) -> None:
        """Move the finished folder ``local`` into place at ``rel`` (a rename, replacing an older one)."""
        if Path(local).resolve() != (self.root / rel).resolve():
            replace_dir(local, self.root / rel)

    def local_dir(self, rel: str, last: str | None = None) -> Path:
        return self.root / rel

    def download(self, rel: str, local: Path) -> None:
        shutil.rmtree(local, ignore_errors=True)
        shutil.copytree(self.root / rel, local)


class ObjectStore:
    """A run directory at an fsspec URL: every write is one PUT of the whole object."""

    local = False

    def __init__(self, url: str):
        import fsspec

        self.url = url.rstrip("/")
        # no listings cache: the workers and other commands write under the same prefix
        self.fs, base = fsspec.core.url_to_fs(self.url, use_listings_cache=False)
        self.base = base.rstrip("/")

    def _p(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def uri(self, rel: str = "") -> str:
        return f"{self.url}/{rel}" if rel else self.url

    def exists(self, rel: str) -> bool:
        return bool(self.fs.exists(self._p(rel)))

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self._p(rel))

    def open(self, rel: str) -> IO[bytes]:
        return self.fs.open(self._p(rel), "rb")

    def read_many(self, rels: list[str]) -> dict[str, bytes]:
        """The bytes of each of ``rels`` that exists, fetched concurrently (records of many shards: one round
        trip's latency, not one per shard)."""
        if not rels:
            return {}
        found = self.fs.cat([self._p(r) for r in rels], on_error="omit")
        n = len(self.base) + 1
        return {p[n:]: v for p, v in found.items()}

    def write_bytes(self, rel: str, data: bytes) -> None:
        self.fs.pipe_file(self._p(rel), data)

    def write_parquet(self, rel: str, table: pa.Table) -> None:
        self.fs.pipe_file(self._p(rel), _parquet_bytes(table))

    @contextmanager
    def parquet_writer(self, rel: str, schema: pa.Schema) -> Iterator[pq.ParquetWriter]:
        """A ParquetWriter on a local temporary file, uploaded (one object) when the block ends without an
        error: memory stays bounded at any size."""
        tmp_dir = cache_root() / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".parquet", dir=tmp_dir)
        os.close(fd)
        try:
            writer = pq.ParquetWriter(tmp, schema, compression="zstd")
            try:
                yield writer
            finally:
                writer.close()
            self.fs.put_file(tmp, self._p(rel))
        finally:
            Path(tmp).unlink(missing_ok=True)

    def glob(self, pattern: str) -> list[str]:
        found = self.fs.glob(self._p(pattern), detail=True)
        n = len(self.base) + 1
        return sorted(p[n:] for p, info in found.items() if info.get("type") == "file")

    def size(self, rel: str) -> int:
        return int(self.fs.size(self._p(rel)))

    def remove(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._p(rel))

    def remove_tree(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._p(rel), recursive=True)

    def files(self, rel: str) -> list[str]:
        """Every file under the folder ``rel``, relative to it."""
        n = len(self._p(rel)) + 1
        try:
            return sorted(p[n:] for p in self.fs.find(self._p(rel)))
        except FileNotFoundError:
            return []

    def put_dir(self, local: str | Path, rel: str, last: str | None = None) -> None:
        """Upload the finished folder ``local`` to ``rel``, replacing what is there, and remove ``local``. The
        marker ``last`` is removed first and uploaded last: while it is missing the folder is incomplete."""
        local = Path(local)
        new = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
        if last:
            self.remove(f"{rel}/{last}")
        for stale in set(self.files(rel)) - set(new):
            self.remove(f"{rel}/{stale}")
        first = [f for f in new if f != last]
        if first:
            self.fs.put([str(local / f) for f in first], [self._p(f"{rel}/{f}") for f in first])
        if last and last in new:
            self.fs.put_file(str(local / last), self._p(f"{rel}/{last}"))
        shutil.rmtree(local, ignore_errors=True)

    def download(self, rel: str, local: Path) -> None:
        """Copy the folder ``rel`` to ``local`` (which it replaces)."""
        shutil.rmtree(local, ignore_errors=True)
        files = self.files(rel)
        local.mkdir(parents=True)
        if files:
            self.fs.get([self._p(f"{rel}/{f}") for f in files], [str(local / f) for f in files])

    def local_dir(self, rel: str, last: str | None = None) -> Path:
        """A local copy of the folder ``rel`` (a checkpoint: engines and trainers load local folders), cached
        under `cache_root` by the URL, names, sizes and ETags of its files (`jade.remote.localize`): made once per
        machine and content. With ``last`` (its marker), a folder without it is refused as incomplete."""
        if last and not self.exists(f"{rel}/{last}"):
            raise FileNotFoundError(f"{self.uri(rel)}: incomplete or missing (no {last})")
        return Path(localize(self.uri(rel), "dir"))

    # the lock's conditional writes (pipeline.runlock) --------------------------------------------------
    def create(self, rel: str, data: bytes) -> str | None:
        """Write ``rel`` only if it does not exist (S3: ``If-None-Match: *``); raises FileExistsError. Returns
        the new object's version tag (its ETag) where the store gives one."""
        out = self.fs.pipe_file(self._p(rel), data, mode="create")
        return _etag(out)

    def stat(self, rel: str) -> dict[str, Any]:
        """{"etag", "mtime" (seconds since the epoch, the store's clock)} of ``rel``; FileNotFoundError."""
        info = self.fs.info(self._p(rel))
        mtime = info.get("LastModified") or info.get("mtime") or info.get("created")
        if hasattr(mtime, "timestamp"):
            mtime = mtime.timestamp()
        return {"etag": info.get("ETag"), "mtime": float(mtime) if mtime is not None else None}

    def conditional(self) -> bool:
        """Whether the store replaces and deletes an object only if it is still the version we saw (S3)."""
        return type(self.fs).__name__ == "S3FileSystem"

    def replace_if(self, rel: str, data: bytes, etag: str | None) -> str | None:
        """Overwrite ``rel`` only if it is still version ``etag`` (S3: ``If-Match``); raises
        `VersionChanged`. Returns the new version tag. Stores without conditional writes overwrite."""
        if not self.conditional() or not etag:
            self.fs.pipe_file(self._p(rel), data)
            return self.stat(rel)["etag"]
        try:
            return _etag(self.fs.pipe_file(self._p(rel), data, IfMatch=etag))
        except FileNotFoundError:
            raise VersionChanged(rel) from None
        except OSError as e:  # 412 Precondition Failed, or 409 a concurrent conditional write
            raise VersionChanged(f"{rel}: {e}") from None

    def delete_if(self, rel: str, etag: str | None) -> None:
        """Delete ``rel`` only if it is still version ``etag`` (S3: ``If-Match``); raises `VersionChanged`."""
        if not self.conditional() or not etag:
            self.remove(rel)
            return
        bucket, key, _ = self.fs.split_path(self._p(rel))
        try:
            self.fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=etag)
        except FileNotFoundError:
            return
        except OSError as e:
            if _code(e) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                raise VersionChanged(f"{rel}: {e}") from None
            # a store that does not take If-Match on a delete: compare, then delete (a narrow race)
            with contextlib.suppress(FileNotFoundError):
                if self.stat(rel)["etag"] != etag:
                    raise VersionChanged(rel) from None
                self.remove(rel)


class VersionChanged(RuntimeError):
    """A conditional write or delete found another version of the object than the one it was made for."""


def _code(e: BaseException) -> str | None:
    """The S3 error code behind an s3fs error (its cause is botocore's ClientError)."""
    response = getattr(e.__cause__, "response", None) or {}
    return response.get("Error", {}).get("Code")


def _etag(response: Any) -> str | None:
    return response.get("ETag") if isinstance(response, dict) else None
