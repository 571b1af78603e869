"""The framework's books, in milliseconds, with a stage of a few lines and no model: skip what is done, write
tables atomically and the record last, remove a shard's stale files, record a shard that raises and leave it
out downstream, sum counts, prune removed shards, fingerprint per shard from upstream outputs."""

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jade.formats.samples import ShardRef
from jade.pipeline.executor import LocalExecutor
from jade.pipeline.rundir import RunDir, atomic_dir, atomic_write_json, read_json
from jade.pipeline.runner import execute
from jade.pipeline.stage import ShardFiles, ShardResult, ShardStage
from jade.pipeline.stats import sum_counts

CALLS: list[tuple[str, str]] = []


@dataclass(frozen=True)
class Parts:
    parts: int  # files a shard writes


class Source(ShardStage):
    """A first shard stage: writes `parts` files per shard with one row each, and fails on shard "bad"."""

    name = "source"
    OUT = ShardFiles("out/{shard}-{part}.parquet")
    outputs = (OUT,)

    def __init__(self, parts: int):
        self.settings = Parts(parts)

    def owns(self, shard_id):
        return [f"out/{shard_id}-*.parquet"]

    def worker(self, run, runtime):
        def work(shard: ShardRef) -> ShardResult:
            CALLS.append((self.name, shard.shard_id))
            if shard.shard_id == "bad":
                raise ValueError("a bad shard")
            n = self.settings.parts
            tables = {f"out/{shard.shard_id}-{k}.parquet": pa.table({"k": [k]}) for k in range(n)}
            return ShardResult(tables, {"rows": n, "by": {"x": 1}}, n)

        return work


class Sink(ShardStage):
    """A second shard stage reading the first's output, and (reads_earlier) the shards before it."""

    name, reads_earlier = "sink", True
    OUT = ShardFiles("sink/{shard}.parquet")
    outputs = (OUT,)
    inputs = (Source.OUT,)
    settings = {}

    def worker(self, run, runtime):
        def work(shard: ShardRef) -> ShardResult:
            CALLS.append((self.name, shard.shard_id))
            n = sum(pq.read_table(p).num_rows for p in (run.root / "out").glob(f"{shard.shard_id}-*.parquet"))
            return ShardResult({self.OUT.path(shard.shard_id): pa.table({"n": [n]})}, {"seen": n}, n)

        return work


def _run(tmp_path, shards, parts=2):
    CALLS.clear()
    refs = [ShardRef(s, f"{s}.tar", "webdataset") for s in shards]
    return execute([Source(parts), Sink()], RunDir(tmp_path), refs, LocalExecutor())


def test_done_shards_are_skipped_and_counts_summed(tmp_path):
    s = _run(tmp_path, ["a", "b"])
    assert CALLS == [("source", "a"), ("source", "b"), ("sink", "a"), ("sink", "b")]
    assert s["source"]["counts"] == {"rows": 4, "by": {"x": 2}} and s["sink"]["counts"] == {"seen": 4}
    rec = read_json(tmp_path / "_state/source/a.json")
    assert rec["images"] == 2 and rec["output_fp"] and rec["fingerprint"]
    s = _run(tmp_path, ["a", "b"])
    assert CALLS == [] and s["source"]["skipped"] and s["sink"]["skipped"]


def test_a_new_shard_runs_alone_and_a_removed_one_is_pruned(tmp_path):
    _run(tmp_path, ["a", "b"])
    _run(tmp_path, ["a", "b", "c"])  # appended: the earlier shards' inputs did not change
    assert CALLS == [("source", "c"), ("sink", "c")]
    _run(tmp_path, ["a", "c"])
    assert not list((tmp_path / "out").glob("b-*")) and not (tmp_path / "sink/b.parquet").exists()
    assert not (tmp_path / "_state/source/b.json").exists()
    # a shard inserted before others: the later ones read the earlier shards (reads_earlier), so they re-run
    _run(tmp_path, ["0", "a", "c"])
    assert CALLS == [("source", "0"), ("sink", "0"), ("sink", "a"), ("sink", "c")]


def test_a_changed_setting_rewrites_and_removes_stale_files(tmp_path):
    _run(tmp_path, ["a"], parts=3)
    assert len(list((tmp_path / "out").glob("a-*"))) == 3
    _run(tmp_path, ["a"], parts=1)
    assert sorted(p.name for p in (tmp_path / "out").glob("a-*")) == ["a-0.parquet"]
    assert ("sink", "a") in CALLS  # its input changed


def test_a_failing_shard_is_recorded_and_left_out_downstream(tmp_path):
    s = _run(tmp_path, ["a", "bad"])
    assert s["source"]["failed_shards"]["bad"]["error"] == "ValueError: a bad shard"
    assert read_json(tmp_path / "_state/source/_failed/bad.json")["traceback"]
    assert ("sink", "bad") not in CALLS and s["sink"]["shards"] == 1
    assert read_json(tmp_path / "_state/source/_stage.json")["complete"] is False


def test_sum_counts_and_atomic_helpers(tmp_path):
    assert sum_counts([{"a": 1, "b": {"c": 2}}, {"a": 2, "b": {"c": 1, "d": 4}}]) == {
        "a": 3,
        "b": {"c": 3, "d": 4},
    }
    with pytest.raises(TypeError, match="numbers"):
        sum_counts([{"a": "x"}])
    atomic_write_json(tmp_path / "j.json", {"x": 1})
    assert read_json(tmp_path / "j.json") == {"x": 1} and not list(tmp_path.glob(".j.json.tmp*"))
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "d") as tmp:
        (tmp / "f").write_text("2")
        raise RuntimeError("killed")
    assert (tmp_path / "d" / "f").read_text() == "1" and len(list(tmp_path.iterdir())) == 2  # no leftovers


def test_a_commit_killed_half_way_leaves_no_orphan(tmp_path, monkeypatch):
    """Shard "a" re-run after a commit that died between its tables (5 parts) and its record: the next commit
    removes every part the dead one wrote, from the intent it left, and lists no folder of outputs to find them
    (the cost of a commit does not grow with the run)."""
    _run(tmp_path, ["a", "b"], parts=3)
    intent = tmp_path / "_state/source/_pending/a.json"
    intent.parent.mkdir(parents=True, exist_ok=True)
    intent.write_text(json.dumps({"files": [f"out/a-{k}.parquet" for k in range(5)]}))
    for k in range(5):
        pq.write_table(pa.table({"k": [k]}), tmp_path / f"out/a-{k}.parquet")
    (tmp_path / "_state/source/a.json").unlink()
    listed = []
    real = Path.glob

    def glob(self, pattern, *a, **k):
        listed.append(str(self / pattern))
        return real(self, pattern, *a, **k)

    monkeypatch.setattr(Path, "glob", glob)
    _run(tmp_path, ["a", "b"], parts=3)
    monkeypatch.undo()
    assert CALLS == [("source", "a")]  # its output is as before: the sink has nothing to redo
    assert sorted(p.name for p in (tmp_path / "out").glob("a-*")) == [f"a-{k}.parquet" for k in range(3)]
    assert not intent.exists()
    assert read_json(tmp_path / "_state/source/a.json")["files"] == [f"out/a-{k}.parquet" for k in range(3)]
    assert not [p for p in listed if "/out/" in p]  # no folder of outputs was listed


def test_a_shards_record_does_not_grow_with_the_shards_before_it(tmp_path):
    """Issue 30: no per-shard cost that grows with the shard count (the reads_earlier stage included): the
    last shard's completion record is as small at 60 shards as at 4."""
    few, many = tmp_path / "few", tmp_path / "many"
    _run(few, [f"s{i:03d}" for i in range(4)])
    _run(many, [f"s{i:03d}" for i in range(60)])
    for stage in ("source", "sink"):
        small = len((few / "_state" / stage / "s003.json").read_bytes())
        large = len((many / "_state" / stage / "s059.json").read_bytes())
        assert large <= small + 8, (stage, small, large)


def test_a_reads_earlier_fingerprint_does_not_grow_with_the_shards_before_it(tmp_path, monkeypatch):
    """What a reads_earlier shard's fingerprint hashes is a chained digest of the shards before it, not their
    list: the work per shard is the same at 60 shards as at 4 (issue 30: it was quadratic)."""
    from jade.pipeline import shardmap

    hashed: list[int] = []
    real = shardmap.fingerprint

    def counting(obj):
        if isinstance(obj, dict) and "earlier" in obj:
            hashed.append(len(json.dumps(obj, default=str)))
        return real(obj)

    monkeypatch.setattr(shardmap, "fingerprint", counting)
    _run(tmp_path / "few", [f"s{i:03d}" for i in range(4)])
    few, hashed[:] = max(hashed), []
    _run(tmp_path / "many", [f"s{i:03d}" for i in range(60)])
    assert hashed and max(hashed) <= few + 8
