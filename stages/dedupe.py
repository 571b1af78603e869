"""Dedupe: across shards, a sample whose key, or (with `ingest.dedupe`) whose image bytes, an earlier sample
already holds is not annotated twice. The first occurrence in run order (shards in order, rows in order) wins;
each later one goes to `Dedupe.DUPLICATES` (failures/<shard>.duplicates.parquet) with the reason: "duplicate
key: also in shard S" (the shard of the key's first occurrence) or "duplicate image: same as KEY" (the first
kept sample with those bytes). The rest -> `Dedupe.SAMPLES`. A sample's fate depends only on the samples
before it, so adding shards at the end changes nothing before them, and a re-run gives the same answer
whatever order shards finished in.

Linear in the number of images, with bounded memory (`prepare`, once per run before the shards):

1. per shard, in parallel on the executor: a digest of each sample, 64-bit hashes of its key and image
   (`_work/dedupe/digests/`, kept until the shard is committed, for as long as its ingest output is the same);
2. over the digests of every shard, in ``buckets`` hash partitions (16 bytes of digest per image in memory,
   at most ``bucket_images`` images a partition), the first occurrence of each key, then of each image among
   the samples not dropped for their key; a hash match is confirmed on the exact key or sha256 before a sample
   is dropped (a 64-bit collision drops nothing);
3. per shard, in parallel: the samples minus the dropped ones (`Deduper`).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from jade.formats.run_tables import Failure, failures_table
from jade.formats.samples import ShardRef
from jade.pipeline.executor import WorkerFactory
from jade.pipeline.resources import StageResources
from jade.pipeline.rundir import RunDir
from jade.pipeline.stage import Context, Runtime, ShardFiles, ShardResult, ShardStage

__all__ = ["Dedupe", "DedupeSettings", "Deduper", "digest", "find_duplicates"]
DROPS = pa.schema([("row", pa.int64()), ("reason", pa.string())])


@dataclass(frozen=True)
class DedupeSettings:
    by_content: bool  # byte-identical images under different keys are one image


def _hash64(values: list[str]) -> np.ndarray:
    return np.array(
        [int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little") for v in values],
        dtype=np.uint64,
    )


def digest(samples: pa.Table) -> np.ndarray:
    """[rows, 2] uint64: a hash of each sample's key and the first 64 bits of its image's sha256."""
    keys = samples.column("key").to_pylist()
    shas = samples.column("sha256").to_pylist()
    out = np.empty((len(keys), 2), dtype=np.uint64)
    out[:, 0] = _hash64(keys)
    out[:, 1] = np.array([int(h[:16], 16) for h in shas], dtype=np.uint64)
    return out


class _Exact:
    """The exact key or sha256 of given rows (global indices), read from their shards (``read(shard index,
    column)``): only for rows whose hash repeats, each shard once per call."""

    def __init__(self, read, starts: np.ndarray):
        self.read, self.starts = read, starts

    def where(self, g: int) -> tuple[int, int]:
        i = int(np.searchsorted(self.starts, g, side="right") - 1)
        return i, int(g - self.starts[i])

    def fetch(self, rows: np.ndarray, column: str) -> dict[int, str]:
        out: dict[int, str] = {}
        by_shard: dict[int, list[int]] = defaultdict(list)
        for g in np.unique(rows).tolist():
            by_shard[self.where(g)[0]].append(g)
        for i, gs in by_shard.items():
            values = self.read(i, column)
            out.update({g: values[g - int(self.starts[i])] for g in gs})
        return out


def find_duplicates(
    shards: list[str],
    digests: list[np.ndarray],
    settings: DedupeSettings,
    read,
    bucket_images: int = 2_000_000,
) -> dict[str, list[tuple[int, str]]]:
    """{shard: [(row, reason)]}: every sample that repeats an earlier one (run order: ``shards`` in order, rows
    in order), from the shards' `digest`s, one hash partition at a time. ``read(shard index, column)``: the
    exact "key" or "sha256" column of a shard (a list), to confirm hash matches."""
    sizes = np.array([len(d) for d in digests], dtype=np.int64)
    starts = np.r_[0, np.cumsum(sizes)[:-1]] if len(sizes) else np.zeros(0, np.int64)
    total = int(sizes.sum())
    buckets = max(1, math.ceil(total / bucket_images))
    exact = _Exact(read, starts)
    dropped = np.zeros(total, dtype=bool)
    reasons: dict[int, str] = {}

    def partition(col: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """(hashes, global indices) of the rows in partition ``b`` of column ``col``, in global order."""
        hs, gs = [], []
        for d, start in zip(digests, starts, strict=True):
            h = d[:, col]
            sel = np.nonzero(h % buckets == b)[0] if buckets > 1 else np.arange(len(h))
            hs.append(h[sel])
            gs.append(sel + start)
        if not hs:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        return np.concatenate(hs), np.concatenate(gs)

    # keys: a key seen before (ingest keeps keys unique within a shard: "before" is an earlier shard)
    for b in range(buckets):
        h, g = partition(0, b)
        for dup, first in _exact_groups(h, g, exact, "key"):
            dropped[dup] = True
            reasons[dup] = f"duplicate key: also in shard {shards[exact.where(first)[0]]}"
    # images: bytes seen before in a sample that was kept
    if settings.by_content:
        for b in range(buckets):
            h, g = partition(1, b)
            keep = ~dropped[g]
            pairs = _exact_groups(h[keep], g[keep], exact, "sha256")
            keys = exact.fetch(np.array([f for _, f in pairs], dtype=np.int64), "key")
            for dup, first in pairs:
                dropped[dup] = True
                reasons[dup] = f"duplicate image: same as {keys[first]}"
    out: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for gi in sorted(reasons):
        i, row = exact.where(gi)
        out[shards[i]].append((row, reasons[gi]))
    return dict(out)


def _exact_groups(h: np.ndarray, g: np.ndarray, exact: _Exact, column: str) -> list[tuple[int, int]]:
    """(row, the first earlier row with the same value) for every row whose value an earlier row holds, from
    hashes ``h`` of rows ``g`` (global indices): rows are grouped by hash, and within a group, in global order,
    each is confirmed on its exact value (a collision, two values under one hash, drops nothing)."""
    order = np.lexsort((g, h))  # by hash, then run order
    hs, gs = h[order], g[order]
    head = np.r_[True, hs[1:] != hs[:-1]] if len(hs) else np.zeros(0, dtype=bool)
    group = np.maximum.accumulate(np.where(head, np.arange(len(hs)), 0))
    repeats = np.nonzero(~head)[0]
    if not len(repeats):
        return []
    values = exact.fetch(np.concatenate([gs[repeats], gs[group[repeats]]]), column)
    pairs: list[tuple[int, int]] = []
    seen: dict[int, list[int]] = {}  # group start -> the first row of each distinct value, in run order
    for pos in repeats.tolist():
        start, row = int(group[pos]), int(gs[pos])
        firsts = seen.setdefault(start, [int(gs[start])])
        hit = next((f for f in firsts if values[f] == values[row]), None)
        if hit is None:  # a collision: a value of its own under this hash
            firsts.append(row)
        else:
            pairs.append((row, hit))
    return pairs


class DigestWorker:
    """Per shard (on the executor): the digest of its samples, saved once per ingest output."""

    def __init__(self, run_root: str, samples: ShardFiles):
        self.run, self.samples = RunDir(run_root), samples

    def __call__(self, item: dict) -> dict:
        table = self.run.read_table(self.samples, item["shard_id"], columns=["key", "sha256"])
        tag = np.array([[int(item["input_fp"], 16), 0]], dtype=np.uint64)  # row 0: what it is the digest of
        self.run.write_bytes(item["path"], _npy(np.concatenate([tag, digest(table)])))
        return {"shard": item["shard_id"], "rows": table.num_rows}


def _digest_of(saved: bytes | None, input_fp: str) -> np.ndarray | None:
    """A saved digest (its file's bytes), if it is of this ingest output (its tag row); else None."""
    import io

    if saved is None:
        return None
    try:
        d = np.load(io.BytesIO(saved), allow_pickle=False)
    except ValueError:
        return None
    return d[1:] if len(d) and int(d[0, 0]) == int(input_fp, 16) else None


def _npy(a: np.ndarray) -> bytes:
    import io

    f = io.BytesIO()
    np.save(f, a, allow_pickle=False)
    return f.getvalue()


def _drops(shard_id: str) -> str:
    """A shard's drop list (rows and reasons), relative to the run directory."""
    return f"_work/{Dedupe.name}/drops/{shard_id}.parquet"


class Deduper:
    def __init__(self, run: RunDir, samples: ShardFiles):
        self.run, self.samples = run, samples

    def __call__(self, shard: ShardRef) -> ShardResult:
        table = self.run.read_table(self.samples, shard.shard_id)
        drops = self.run.read_table(_drops(shard.shard_id)).to_pylist()
        gone = {d["row"]: d["reason"] for d in drops}
        keep = [i for i in range(table.num_rows) if i not in gone]
        rows = table.select(["key", "url"]).to_pylist()
        dups = [
            Failure("images", shard.shard_id, rows[i]["key"], rows[i]["url"], Dedupe.name, r)
            for i, r in sorted(gone.items())
        ]
        reasons: dict[str, int] = {}
        for d in dups:
            category = d.reason.split(":", 1)[0]
            reasons[category] = reasons.get(category, 0) + 1
        counts = {"images_ok": len(keep), "images_failed": len(dups), "failure_reasons": reasons}
        tables = {Dedupe.SAMPLES.path(shard.shard_id): table.take(pa.array(keep, type=pa.int64()))}
        if dups:
            tables[Dedupe.DUPLICATES.path(shard.shard_id)] = failures_table(dups)
        return ShardResult(tables, counts, table.num_rows)


class Dedupe(ShardStage):
    name = "dedupe"
    version = (
        2  # 2: linear (digests and drop lists); an image dropped for its key never makes another a duplicate
    )
    SAMPLES = ShardFiles("_work/dedupe/{shard}.parquet")  # the samples to annotate (`SAMPLE`)
    DUPLICATES = ShardFiles("failures/{shard}.duplicates.parquet")
    outputs = (SAMPLES, DUPLICATES)
    reads_earlier = True  # a shard's output depends on the shards before it

    def __init__(
        self,
        settings: DedupeSettings,
        samples: ShardFiles,
        resources: StageResources,
        bucket_images: int = 2_000_000,
    ):
        self.settings, self.samples, self.resources = settings, samples, resources
        self.bucket_images = bucket_images  # memory, not output: images per hash partition
        self.inputs = (samples,)

    def prepare(self, ctx: Context, shards: list[ShardRef]) -> None:
        """The drop list of every shard (`_work/dedupe/drops/`), from the digests of every shard."""
        run = ctx.run
        upstream = ctx.producer(self.samples).name
        fps = {}
        recs = run.done_many(upstream, {s.shard_id: ctx.shard_fps[upstream][s.shard_id] for s in shards})
        for s in shards:  # every shard here has a current upstream record (`shards`: with current inputs)
            rec = recs[s.shard_id]
            assert rec is not None, s.shard_id
            fps[s.shard_id] = rec["output_fp"]
        paths = {s: f"_work/{self.name}/digests/{s}.npy" for s in fps}
        saved = run.read_many(list(paths.values()))
        loaded = {s: _digest_of(saved.get(p), fps[s]) for s, p in paths.items()}
        todo = [{"shard_id": s, "path": paths[s], "input_fp": fps[s]} for s, d in loaded.items() if d is None]
        if todo:
            results = ctx.executor.map_shards(
                WorkerFactory(DigestWorker, run.url, self.samples), todo, self.resources, name=self.name
            )
            if failed := [r for r in results if r.get("error")]:
                raise RuntimeError(f"{self.name}: digest of shard {failed[0]['shard']}: {failed[0]['error']}")
        order = [s.shard_id for s in shards]
        saved = run.read_many([paths[sid] for sid in order if loaded[sid] is None])  # made just now
        digests: list[np.ndarray] = []
        for sid in order:
            d = loaded[sid] if loaded[sid] is not None else _digest_of(saved.get(paths[sid]), fps[sid])
            if d is None:
                raise RuntimeError(f"{self.name}: no digest of shard {sid} at {paths[sid]}")
            digests.append(d)

        def read(i: int, column: str) -> list:
            return run.read_table(self.samples, order[i], columns=[column]).column(0).to_pylist()

        drops = find_duplicates(order, digests, self.settings, read, self.bucket_images)
        for sid in order:
            rows = drops.get(sid, [])
            table = pa.table({"row": [r for r, _ in rows], "reason": [x for _, x in rows]}, schema=DROPS)
            run.write_parquet(_drops(sid), table)

    def owns(self, shard_id: str) -> list[str]:
        """Its outputs, and its scratch files of the shard (the digest and the drop list: gone once the shard is
        committed, or the shard is removed from the run)."""
        return [*super().owns(shard_id), _drops(shard_id), f"_work/{self.name}/digests/{shard_id}.npy"]

    def worker(self, run: RunDir, runtime: Runtime) -> Deduper:
        return Deduper(run, self.samples)
