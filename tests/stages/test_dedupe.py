"""Deduplication across shards, linear in the images: the first occurrence in run order wins, the reasons name
what a duplicate repeats, hash partitions and 64-bit collisions change nothing, and each shard's ingest output
is read a bounded number of times however many shards there are."""

import numpy as np
import pyarrow as pa
import pytest

from jade.formats.run_tables import SAMPLE
from jade.formats.samples import ShardRef
from jade.pipeline.executor import LocalExecutor
from jade.pipeline.resources import StageResources
from jade.pipeline.rundir import RunDir, atomic_write_parquet
from jade.pipeline.runner import execute
from jade.pipeline.stage import ShardFiles, ShardResult, ShardStage
from jade.stages.dedupe import Dedupe, DedupeSettings, digest, find_duplicates

SAMPLES = ShardFiles("in/{shard}.parquet")


def _table(rows):
    return pa.Table.from_pylist(
        [
            {
                "key": k,
                "source_key": k,
                "url": f"http://x/{k}",
                "caption": "c",
                "width": 8,
                "height": 8,
                "sha256": h,
            }
            for k, h in rows
        ],
        schema=SAMPLE,
    )


def sha(c: str) -> str:
    return (c * 64)[:64]


SHARDS = {  # key, image
    "s0": [("a", sha("1")), ("b", sha("2")), ("c", sha("2"))],  # c: same bytes as b, in its own shard
    "s1": [("a", sha("3")), ("d", sha("3")), ("e", sha("1"))],  # a: key of s0; d: a's bytes (a was dropped)
    "s2": [("f", sha("4")), ("g", sha("2"))],
}
EXPECTED = {
    "s0": [(2, "duplicate image: same as b")],
    "s1": [(0, "duplicate key: also in shard s0"), (2, "duplicate image: same as a")],
    "s2": [(1, "duplicate image: same as b")],
}


def _reader(run, order):
    return lambda i, column: run.read_table(SAMPLES, order[i], columns=[column]).column(0).to_pylist()


def _write(run, shards):
    for s, rows in shards.items():
        atomic_write_parquet(run.path(SAMPLES, s), _table(rows))


@pytest.mark.parametrize("bucket_images", [1_000_000, 2, 1])
def test_first_occurrence_in_run_order_wins(tmp_path, bucket_images):
    run = RunDir(tmp_path)
    _write(run, SHARDS)
    order = list(SHARDS)
    digests = [digest(run.read_table(SAMPLES, s)) for s in order]
    drops = find_duplicates(order, digests, DedupeSettings(True), _reader(run, order), bucket_images)
    assert drops == EXPECTED
    # by key only: the images stay
    drops = find_duplicates(order, digests, DedupeSettings(False), _reader(run, order), bucket_images)
    assert drops == {"s1": [(0, "duplicate key: also in shard s0")]}


def test_a_hash_collision_drops_nothing(tmp_path):
    run = RunDir(tmp_path)
    _write(run, {"s0": [("a", sha("1"))], "s1": [("b", sha("2"))]})
    digests = [np.array([[7, 9]], dtype=np.uint64), np.array([[7, 9]], dtype=np.uint64)]  # forced collisions
    assert find_duplicates(["s0", "s1"], digests, DedupeSettings(True), _reader(run, ["s0", "s1"])) == {}


def test_a_shards_fate_depends_only_on_the_shards_before_it(tmp_path):
    run = RunDir(tmp_path)
    _write(run, SHARDS)
    order = list(SHARDS)
    digests = {s: digest(run.read_table(SAMPLES, s)) for s in order}
    for n in range(1, len(order) + 1):
        part = order[:n]
        drops = find_duplicates(part, [digests[s] for s in part], DedupeSettings(True), _reader(run, part))
        assert drops == {s: EXPECTED[s] for s in order[:n] if s in EXPECTED}


class Source(ShardStage):
    """Writes each shard's samples as ingest would."""

    name = "source"
    outputs = (SAMPLES,)
    settings: dict = {}

    def __init__(self, shards):
        self.shards = shards

    def worker(self, run, runtime):
        return lambda s: ShardResult({SAMPLES.path(s.shard_id): _table(self.shards[s.shard_id])}, {}, 1)


def test_the_stage_reads_each_shard_a_bounded_number_of_times(tmp_path, monkeypatch):
    shards = {f"{i:03d}": [(f"k{i}-{j}", sha(str((i * 7 + j) % 10))) for j in range(3)] for i in range(24)}
    reads: dict[str, int] = {}
    real = RunDir.read_table

    def counting(self, files, shard=None, columns=None):
        if files == SAMPLES:
            reads[shard] = reads.get(shard, 0) + 1
        return real(self, files, shard, columns)

    monkeypatch.setattr(RunDir, "read_table", counting)
    refs = [ShardRef(s, f"{s}.tar", "webdataset") for s in shards]
    stages = [Source(shards), Dedupe(DedupeSettings(True), SAMPLES, StageResources())]
    out = execute(stages, RunDir(tmp_path), refs, LocalExecutor())
    assert out["dedupe"]["counts"]["images_ok"] + out["dedupe"]["counts"]["images_failed"] == 72
    # a digest, the shard itself, and at most two reads of exact values: never once per earlier shard
    assert max(reads.values()) <= 4 and sum(reads.values()) <= 4 * len(shards)
    # appending a shard re-runs only that one (the others' drop lists cannot change)
    shards["999"] = [("k0-0", sha("0")), ("new", sha("f"))]
    refs.append(ShardRef("999", "999.tar", "webdataset"))
    out = execute(
        [Source(shards), Dedupe(DedupeSettings(True), SAMPLES, StageResources())],
        RunDir(tmp_path),
        refs,
        LocalExecutor(),
    )
    assert out["dedupe"]["shards_run"] == 1
    rows = RunDir(tmp_path).read_table(Dedupe.DUPLICATES, "999").to_pylist()
    assert [r["reason"] for r in rows] == ["duplicate key: also in shard 000"]
