"""The run directory's records and atomic writes, in milliseconds: a record counts only with the fingerprint
it was made with, failed-shard records are kept apart from completions until cleared, fingerprints are stable
for dicts and dataclasses alike, and an atomic write that fails leaves the old file and no temporary."""

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jade.pipeline.rundir import (
    RunDir,
    atomic_parquet_writer,
    atomic_write_bytes,
    atomic_write_parquet,
    fingerprint,
    read_json,
    replace_dir,
)


@dataclass(frozen=True)
class Settings:
    top_k: int
    names: tuple[str, ...] = ("a",)


def test_a_record_counts_only_with_its_fingerprint(tmp_path):
    run = RunDir(tmp_path)
    assert run.done("ingest", "f1", "00000") is None
    run.mark_done("ingest", "f1", {"shard": "00000", "images": 3}, "00000")
    rec = run.done("ingest", "f1", "00000")
    assert rec["images"] == 3 and rec["fingerprint"] == "f1" and rec["finished_at"] > 0
    assert run.done("ingest", "f2", "00000") is None  # other settings: not done
    run.mark_done("ingest", "s", {"shards": 1})  # the stage's own record sits beside the shards'
    assert run.record_path("ingest").name == "_stage.json" and run.done("ingest", "s")["shards"] == 1
    run.clear("ingest")
    assert run.done("ingest", "f1", "00000") is None and not (tmp_path / "_state/ingest").exists()


def test_failed_shards_are_kept_apart_until_cleared(tmp_path):
    run = RunDir(tmp_path)
    run.mark_failed("generate", "f1", {"shard": "00001", "error": "boom"}, "00001")
    assert run.done("generate", "f1", "00001") is None  # a failure is not a completion
    assert run.failed("generate") == {"00001": {"shard": "00001", "error": "boom", "fingerprint": "f1"}}
    assert run.failed("generate", "f1").keys() == {"00001"} and run.failed("generate", "f2") == {}
    run.clear_failed("generate", "00001")
    assert run.failed("generate") == {}


def test_fingerprints_are_stable_and_canonical():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint(Settings(3)) == fingerprint({"top_k": 3, "names": ["a"]})  # a dataclass: its fields
    assert fingerprint(Settings(3)) != fingerprint(Settings(4)) and len(fingerprint(Settings(3))) == 16


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "sub" / "t.parquet"
    atomic_write_parquet(path, pa.table({"x": [1]}))
    schema = pa.schema([("x", pa.int64())])
    with pytest.raises(RuntimeError), atomic_parquet_writer(path, schema) as w:
        w.write_table(pa.table({"x": [2, 3]}))
        raise RuntimeError("killed mid-write")
    assert pq.read_table(path).column("x").to_pylist() == [1]
    with atomic_parquet_writer(path, schema) as w:
        w.write_table(pa.table({"x": [2, 3]}))
    assert pq.read_table(path).num_rows == 2
    atomic_write_bytes(tmp_path / "b.json", b'{"y": 1}')
    assert read_json(tmp_path / "b.json") == {"y": 1} and read_json(tmp_path / "none.json") is None
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["b.json", "sub", "t.parquet"]


def test_replace_dir_swaps_a_finished_folder_in(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "f").write_text("new")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f").write_text("old")
    replace_dir(tmp_path / "new", tmp_path / "out")
    assert (tmp_path / "out" / "f").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["out"]
