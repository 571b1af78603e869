"""What every export shares: reading the published dataset in streamed slices, and committing its output in
shards that a re-run skips.

An export reads only a run's published dataset (``dataset/data/train-*.parquet``, in file order) and
``stats.json``. It is cut into shards of ``shard_size`` images, planned from the Parquet footers alone; a
shard's rows are read in record batches of a few dozen rows, so memory does not grow with the dataset. Each
shard is written under temporary names and renamed into place by its writer; its completion record
(``_state/<shard>.json``, with its counts) is written last, and a re-run skips every shard that has one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from jade.atomic import atomic_write_json

BATCH_ROWS = 32  # rows per record batch read: a few dozen images in memory at a time
STATE = "_state"


class ExportError(RuntimeError):
    """An export that cannot be made as asked (the message says why and what to do)."""


@dataclass(frozen=True)
class Span:
    """Rows [start, stop) of one data file."""

    file: Path
    start: int
    stop: int


@dataclass(frozen=True)
class Shard:
    index: int
    spans: tuple[Span, ...]

    @property
    def name(self) -> str:
        return f"{self.index:06d}"

    @property
    def rows(self) -> int:
        return sum(s.stop - s.start for s in self.spans)


def data_files(run_dir: Path) -> list[Path]:
    files = sorted((run_dir / "dataset" / "data").glob("train-*.parquet"))
    if not files and not (run_dir / "dataset").is_dir():
        raise ExportError(f"{run_dir}: no dataset/ (export reads a published run: run `jade run` first)")
    return files


def region_conditioned(files: list[Path]) -> bool:
    """Whether the dataset's kept pairs carry the region they were asked about (`generate.condition: region`,
    `formats.dataset.features(region=True)`), read from the Parquet schemas alone."""
    for f in files:
        qa = pq.read_schema(f).field("qa").type
        if "region" in [qa.value_type.field(i).name for i in range(qa.value_type.num_fields)]:
            return True
    return False


def read_stats(run_dir: Path) -> dict:
    path = run_dir / "stats.json"
    if not path.exists():
        raise ExportError(f"{path} not found: export reads a published run (dataset/ and stats.json)")
    return json.loads(path.read_text())


def plan(files: list[Path], shard_size: int) -> list[Shard]:
    """Cut the dataset, in file order, into shards of ``shard_size`` rows (the last may be shorter), from the
    Parquet footers only."""
    if shard_size < 1:
        raise ExportError(f"--shard-size: must be at least 1, got {shard_size}")
    shards: list[Shard] = []
    spans: list[Span] = []
    room = shard_size
    for f in files:
        n, start = pq.ParquetFile(f).metadata.num_rows, 0
        while start < n:
            take = min(room, n - start)
            spans.append(Span(f, start, start + take))
            start, room = start + take, room - take
            if room == 0:
                shards.append(Shard(len(shards), tuple(spans)))
                spans, room = [], shard_size
    if spans:
        shards.append(Shard(len(shards), tuple(spans)))
    return shards


def dataset_fingerprint(files: list[Path], stats: dict) -> str:
    """Names, sizes and row counts of the data files, and the counts of stats.json: an export's records are
    only reused for the same published dataset."""
    parts = [(f.name, f.stat().st_size, pq.ParquetFile(f).metadata.num_rows) for f in files]
    keys = ("images_ok", "qa_kept", "regions_kept")
    text = json.dumps([parts, {k: stats.get(k) for k in keys}], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rows(shard: Shard, columns: list[str]) -> Iterator[dict]:
    """The shard's rows as dicts, read in record batches of ``BATCH_ROWS`` rows."""
    for span in shard.spans:
        pf = pq.ParquetFile(span.file)
        at = 0  # row number in the file of the next batch
        for rg in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(rg).num_rows
            if at + n <= span.start or at >= span.stop:
                at += n
                continue
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[rg], columns=columns):
                lo, hi = max(span.start - at, 0), min(span.stop - at, batch.num_rows)
                if lo < hi:
                    yield from batch.slice(lo, hi - lo).to_pylist()
                at += batch.num_rows
                if at >= span.stop:
                    break
            if at >= span.stop:
                break


def run_shards(
    out: Path,
    shards: list[Shard],
    settings: dict,
    write: Callable[[Shard], dict],
    log: Callable | None = None,
) -> list[dict]:
    """Write every shard that has no completion record made with ``settings`` (``write`` returns its counts),
    record each one last, and return the records of all shards in order."""
    state = out / STATE
    records = []
    for shard in shards:
        path = state / f"{shard.name}.json"
        rec = json.loads(path.read_text()) if path.exists() else None
        if rec is None or rec.get("settings") != settings:
            rec = {"shard": shard.name, "rows": shard.rows, "settings": settings, "counts": write(shard)}
            atomic_write_json(path, rec)
            if log:
                log(f"shard {shard.name}: {rec['counts']}")
        records.append(rec)
    return records


def check_target(out: Path, settings: dict) -> None:
    """Refuse to mix two exports in one folder: the records there must have been made with ``settings``."""
    for path in sorted((out / STATE).glob("*.json")):
        if json.loads(path.read_text()).get("settings") != settings:
            raise ExportError(
                f"{out} holds an export of another dataset or with other options ({path.name}): "
                "give a new --out or remove that folder"
            )


def total(records: list[dict], key: str) -> int:
    return sum(r["counts"].get(key, 0) for r in records)
