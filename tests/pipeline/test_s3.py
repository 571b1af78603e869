"""A run directory on an object store (`RunDir("s3://...")`), against a real S3-compatible server on 127.0.0.1
(moto's server mode, the `s3` fixture), in seconds:

- records, JSON, Parquet, globs and removal go through the store, each write one PUT of the whole object (no
  temporary object is ever left, and a Parquet writer that fails leaves the old object);
- a folder (a checkpoint) is uploaded with its marker removed first and written last, stale files removed; a
  cut upload leaves no marker, and a local copy (the engines' and the trainer's) refuses it;
- the lock: a conditional create (S3's If-None-Match: *), so a second holder stops naming the first; a stale
  lock is taken over by a PUT conditional on the version judged stale (If-Match), so of two takers exactly one
  wins; the heartbeat rewrites it conditionally and learns when it was taken over; the release deletes only
  its own version.
"""

import json
import os
import socket
import time

import fsspec
import pyarrow as pa
import pytest

from jade.pipeline.rundir import RunDir, RunLock, RunLockedError
from jade.pipeline.stage import ShardFiles
from jade.pipeline.store import VersionChanged

DATA = ShardFiles("dataset/data/train-{shard}-{part}-of-{parts}.parquet")


def _fs():
    return fsspec.filesystem("s3", use_listings_cache=False, skip_instance_cache=True)


def _keys(prefix: str) -> list[str]:
    """The keys under ``prefix`` ("bucket/run/..."), without the bucket and the run's own folder."""
    return sorted(p.split("/", 2)[-1] for p in _fs().find(prefix))


def test_records_tables_and_globs_live_on_the_store(s3):
    run = RunDir(f"{s3}/rundir/")
    assert not run.local and run.url == f"{s3}/rundir"
    run.mark_done("ingest", "f1", {"shard": "00000", "images": 3}, "00000")
    assert run.done("ingest", "f1", "00000")["images"] == 3 and run.done("ingest", "f2", "00000") is None
    many = run.done_many("ingest", {"00000": "f1", "00001": "f1", "00002": "f2"})  # fetched concurrently
    assert many == {"00000": run.done("ingest", "f1", "00000"), "00001": None, "00002": None}
    run.mark_failed("generate", "f1", {"error": "boom"}, "00001")
    assert run.failed("generate", "f1") == {"00001": {"error": "boom", "fingerprint": "f1"}}
    run.clear_failed("generate", "00001")
    assert run.failed("generate") == {}
    table = pa.table({"x": [1, 2, 3]})
    for part in range(2):
        run.write_parquet(DATA.path("00000", part, 2), table)
    run.write_parquet("dataset/data/train-00000-other.parquet", table)  # not a part file: not globbed
    assert run.glob(DATA.glob("00000")) == [DATA.path("00000", p, 2) for p in range(2)]
    assert run.read_table(DATA.path("00000", 1, 2), columns=["x"]).column(0).to_pylist() == [1, 2, 3]
    with pytest.raises(RuntimeError), run.parquet_writer(DATA.path("00000", 0, 2), table.schema) as w:
        w.write_table(pa.table({"x": [9]}))
        raise RuntimeError("killed mid-write")
    assert run.read_table(DATA.path("00000", 0, 2)).num_rows == 3  # the old object, whole
    with run.parquet_writer(DATA.path("00000", 0, 2), table.schema) as w:
        w.write_table(pa.table({"x": [7, 8]}))
    assert run.read_table(DATA.path("00000", 0, 2)).num_rows == 2
    run.remove(DATA.path("00000", 1, 2))
    run.remove("no/such/file")  # missing: fine
    assert run.glob(DATA.glob()) == [DATA.path("00000", 0, 2)]
    assert not [k for k in _keys("jade/rundir") if "tmp" in k]  # every write was one PUT: no temporaries
    run.clear("ingest")
    assert run.done("ingest", "f1", "00000") is None and not run.glob("_state/ingest/*")


def test_a_folder_is_uploaded_marker_last_and_copied_down_once(s3, tmp_path, monkeypatch):
    # its own cache: tests/app/test_s3_run.py counts the session's copies
    monkeypatch.setenv("JADE_CACHE", str(tmp_path / "cache"))
    run = RunDir(f"{s3}/ckpt-run")
    old = tmp_path / "old"
    old.mkdir()
    for name, text in {
        "config.json": "{}",
        "model-00001-of-00002.safetensors": "old",
        "jade_model.json": "1",
    }.items():
        (old / name).write_text(text)
    run.put_dir(old, "checkpoints/generator", last="jade_model.json")
    assert not old.exists()  # moved: uploaded, the local folder gone
    first = run.local_dir("checkpoints/generator", "jade_model.json")
    assert first.name == "generator" and (first / "model-00001-of-00002.safetensors").read_text() == "old"
    assert run.local_dir("checkpoints/generator", "jade_model.json") == first  # cached: no second copy
    new = tmp_path / "new"
    new.mkdir()
    for name, text in {"config.json": "{}", "model.safetensors": "new", "jade_model.json": "2"}.items():
        (new / name).write_text(text)
    store = run.store
    calls = []
    real_put, real_put_file = store.fs.put, store.fs.put_file
    monkeypatch.setattr(
        store.fs, "put", lambda src, r, **k: calls.append(("put", r)) or real_put(src, r, **k)
    )
    monkeypatch.setattr(
        store.fs, "put_file", lambda src, r, **k: calls.append(("put_file", r)) or real_put_file(src, r, **k)
    )
    run.put_dir(new, "checkpoints/generator", last="jade_model.json")
    assert calls[-1] == ("put_file", "jade/ckpt-run/checkpoints/generator/jade_model.json")  # the marker last
    assert _keys("jade/ckpt-run/checkpoints") == [
        "checkpoints/generator/config.json",
        "checkpoints/generator/jade_model.json",
        "checkpoints/generator/model.safetensors",  # the old shard is gone: it would be loaded
    ]
    second = run.local_dir("checkpoints/generator", "jade_model.json")
    assert second != first and (second / "model.safetensors").read_text() == "new"
    # an upload cut short (the driver killed) leaves no marker: the folder is refused, not half-loaded
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "jade_model.json").write_text("3")
    (cut / "model.safetensors").write_text("cut")
    monkeypatch.setattr(store.fs, "put", lambda *a, **k: (_ for _ in ()).throw(OSError("connection reset")))
    with pytest.raises(OSError):
        run.put_dir(cut, "checkpoints/generator", last="jade_model.json")
    with pytest.raises(FileNotFoundError, match="incomplete"):
        run.local_dir("checkpoints/generator", "jade_model.json")


def test_a_second_holder_stops_naming_the_first_and_the_release_is_conditional(s3):
    run = RunDir(f"{s3}/locked")
    with RunLock(run) as lock:
        holder = json.loads(run.read_bytes(".lock"))
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(RunLockedError, match=f"is in use by another run: host .*, pid {os.getpid()}"):
            RunLock(RunDir(f"{s3}/locked")).__enter__()
        # a conditional write against another version fails: the lock's own version is what it holds
        with pytest.raises(VersionChanged):
            run.store.replace_if(".lock", b"{}", '"0123456789abcdef0123456789abcdef"')
        assert lock._etag == run.store.stat(".lock")["etag"]
    assert not run.exists(".lock")  # released


def test_a_stale_lock_is_taken_over_by_exactly_one_taker(s3, monkeypatch):
    run = RunDir(f"{s3}/stale")
    other = {"host": "elsewhere", "pid": 1, "since": time.time(), "command": "jade run", "token": "t0"}
    run.write_bytes(".lock", json.dumps(other).encode())
    with pytest.raises(RunLockedError, match="host elsewhere, pid 1"):  # refreshed just now: live
        RunLock(run).__enter__()
    monkeypatch.setattr(RunLock, "STALE_S", -60.0)  # its heartbeat stopped (an age above STALE_S)
    a, b = RunDir(f"{s3}/stale"), RunDir(f"{s3}/stale")
    lock_b = RunLock(b)
    real = a.store.replace_if

    def b_first(rel, data, etag):  # B takes the stale lock between A's look at it and A's write
        lock_b.__enter__()
        return real(rel, data, etag)

    monkeypatch.setattr(a.store, "replace_if", b_first)
    lock_a = RunLock(a)
    with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):  # A lost: B (alive, this host) holds it
        lock_a.__enter__()
    assert json.loads(run.read_bytes(".lock"))["token"] == lock_b.me["token"]
    lock_b.__exit__(None, None, None)
    assert not run.exists(".lock")


def test_a_killed_holders_lock_on_this_host_is_taken_over_at_once(s3):
    run = RunDir(f"{s3}/killed")
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    run.write_bytes(
        ".lock", json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": 1.0}).encode()
    )
    with RunLock(run):
        assert json.loads(run.read_bytes(".lock"))["pid"] == os.getpid()
    assert not run.exists(".lock")


def test_the_heartbeat_refreshes_the_lock_and_learns_when_it_was_taken_over(s3, monkeypatch):
    monkeypatch.setattr(RunLock, "HEARTBEAT_S", 0.05)
    run = RunDir(f"{s3}/beat")
    lock = RunLock(run).__enter__()
    try:
        etag = run.store.stat(".lock")["etag"]
        deadline = time.time() + 10
        while run.store.stat(".lock")["etag"] == etag:
            assert time.time() < deadline, "the heartbeat never rewrote the lock"
            time.sleep(0.05)
        assert "beat" in json.loads(run.read_bytes(".lock"))
        usurper = {"host": "elsewhere", "pid": 2, "since": time.time(), "token": "u"}
        run.write_bytes(".lock", json.dumps(usurper).encode())  # taken over while we slept
        while not lock.lost:
            assert time.time() < deadline, "the heartbeat never noticed"
            time.sleep(0.05)
    finally:
        lock.__exit__(None, None, None)
    assert json.loads(run.read_bytes(".lock"))["token"] == "u"  # the new holder's lock is left alone


def test_a_commit_killed_half_way_on_s3_leaves_no_orphan(s3, monkeypatch):
    """The shard commit of `pipeline.shardmap` on the store: an intent object before the tables, the files in
    the record, the intent removed last. A commit that died between its tables (5 parts) and its record is
    cleaned up by the next one from the intent it left, without listing the folder of outputs; a shard removed
    from the run is pruned from its record, and one whose commit never finished, from its intent."""
    from jade.formats.samples import ShardRef
    from jade.pipeline.executor import LocalExecutor
    from jade.pipeline.runner import execute
    from jade.pipeline.store import ObjectStore
    from tests.pipeline.test_shardmap import Source

    run = RunDir(f"{s3}/commits")

    def go(shards, parts):
        refs = [ShardRef(s, f"{s}.tar", "webdataset") for s in shards]
        return execute([Source(parts)], run, refs, LocalExecutor())

    go(["a", "b"], 3)
    assert run.read_json("_state/source/a.json")["files"] == [f"out/a-{k}.parquet" for k in range(3)]
    assert not run.glob("_state/source/_pending/*")  # each intent removed once its record was written
    run.write_json("_state/source/_pending/a.json", {"files": [f"out/a-{k}.parquet" for k in range(5)]})
    for k in range(5):
        run.write_parquet(f"out/a-{k}.parquet", pa.table({"k": [k]}))
    run.remove("_state/source/a.json")
    listed = []
    real = ObjectStore.glob

    def glob(self, pattern):
        listed.append(pattern)
        return real(self, pattern)

    monkeypatch.setattr(ObjectStore, "glob", glob)
    go(["a", "b"], 3)
    monkeypatch.undo()
    assert run.glob("out/a-*") == [f"out/a-{k}.parquet" for k in range(3)]
    assert not run.exists("_state/source/_pending/a.json")
    assert not [p for p in listed if p.startswith("out/")]  # no folder of outputs was listed
    # "b" dropped from the run; "c" died mid-commit (its intent and one part, no record): both pruned
    run.write_json("_state/source/_pending/c.json", {"files": ["out/c-0.parquet"]})
    run.write_parquet("out/c-0.parquet", pa.table({"k": [0]}))
    go(["a"], 3)
    assert run.glob("out/*") == [f"out/a-{k}.parquet" for k in range(3)]
    assert run.glob("_state/source/**") == ["_state/source/_stage.json", "_state/source/a.json"]


def test_the_endpoint_and_credentials_come_from_fsspec_never_from_the_manifest(s3, monkeypatch, capsys):
    """Without AWS_ENDPOINT_URL, fsspec's config (here its "s3" section, as ~/.config/fsspec/*.json or
    FSSPEC_S3_* variables set it) names the server; a manifest that tries to name one is refused before anything
    is written, the key named."""
    from jade.app.cli import main

    endpoint = os.environ["AWS_ENDPOINT_URL"]
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": endpoint})
    run = RunDir(f"{s3}/conf-run")
    run.write_json("probe.json", {"via": "fsspec config"})
    direct = fsspec.filesystem("s3", endpoint_url=endpoint, skip_instance_cache=True)
    assert json.loads(direct.cat_file("jade/conf-run/probe.json")) == {"via": "fsspec config"}
    sets = ["storage_options.endpoint_url=http://elsewhere:9000", "storage_options.key=AKIA"]
    argv = ["run", "sample", "--out", f"{s3}/conf-run", "--executor", "local"]
    assert main([*argv, *[a for s in sets for a in ("--set", s)]]) == 2
    assert "storage_options: unknown key" in capsys.readouterr().err
    assert run.glob("**") == ["probe.json"]
