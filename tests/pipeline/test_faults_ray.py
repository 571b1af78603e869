"""Faults survived on real Ray, compared with an uninterrupted run of the same command:

- the driver (`jade run`, a subprocess) killed with SIGKILL in the middle of generate, then run again;
- a worker process that dies (os._exit) mid-batch on its first attempt at a shard, retried by Ray.

Each faulted run starts from a copy of the reference run with everything from generate on removed, and the
same sources (SAMPLE_WORLD points at the reference's world), so the fingerprints and checkpoints are the
reference's and the datasets must be equal row for row.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pyarrow.parquet as pq
import pytest

from tests.procs import signal_all
from tests.tiny import TINY

# the reference run (module fixture) and the faulted runs each start Ray and run the factory
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]
SETS = [*TINY, "resources.threads=1"]  # one torch thread everywhere: outputs cannot depend on the pool size
DOWNSTREAM = [
    "_state/generate",
    "_state/filter",
    "_state/publish",
    "_state/_progress",
    "_work/generate",
    "_work/filter",
    "dataset",
    "rejected",
    "stats.json",
]


@pytest.fixture(scope="module")
def ray_tmp():
    """A private Ray temp dir (short: Ray's socket paths must stay under 108 bytes)."""
    d = tempfile.mkdtemp(prefix="jr", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def start(out, ray_tmp, *extra, **env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "JADE_FAULT")}
    env.update(HF_HUB_OFFLINE="1", RAY_AUTH_MODE="disabled", RAY_TMPDIR=ray_tmp, **env_extra)
    argv = [sys.executable, "-m", "jade.app.cli", "run", "sample", "--out", str(out)]
    argv += [a for s in [*SETS, *extra] for a in ("--set", s)]
    log = open(f"{out}.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc, out, timeout=480):
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        raise
    assert rc == 0, open(f"{out}.log").read()[-4000:]


def kill_tree(proc) -> None:
    """SIGKILL the driver's process group and every process it started (the local Ray cluster included,
    whose daemons may have left the group), so nothing leaks into later tests."""
    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    os.killpg(proc.pid, signal.SIGKILL)
    signal_all(procs, "kill")
    _, alive = psutil.wait_procs(procs, timeout=30)
    proc.wait(timeout=30)
    assert not alive, alive


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ray_tmp):
    out = tmp_path_factory.mktemp("faults") / "ref"
    finish(start(out, ray_tmp), out)
    return out


def resumable_copy(reference, dest):
    shutil.copytree(reference, dest)
    for rel in DOWNSTREAM:
        p = dest / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    return dest


def rows(folder):
    out = [r for f in sorted(folder.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return sorted(out, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def assert_same_dataset(run, reference):
    data = rows(run / "dataset" / "data")
    keys = [r["key"] for r in data]
    assert len(keys) == len(set(keys)) > 0  # no duplicates
    assert data == rows(reference / "dataset" / "data")
    assert rows(run / "rejected") == rows(reference / "rejected")
    assert rows(run / "failures") == rows(reference / "failures")
    stats = json.loads((run / "stats.json").read_text())
    assert stats == json.loads((reference / "stats.json").read_text())
    assert stats["images_in"] == stats["images_ok"] + stats["images_failed"]
    assert stats["images_ok"] == len(data)
    assert stats["questions_generated"] == stats["qa_kept"] + stats["qa_rejected"]
    assert stats["qa_kept"] == sum(len(r["qa"]) for r in data)


def test_driver_sigkill_mid_generate_then_rerun_equals_uninterrupted(reference, tmp_path, ray_tmp):
    run = resumable_copy(reference, tmp_path / "killed")
    world = str(reference / "world")
    # Shard 00001 hangs in generate, so the kill lands at a known point: 00000 committed, 00001 in flight.
    proc = start(
        run, ray_tmp, "resources.generate.actors=2", SAMPLE_WORLD=world, JADE_FAULT="hang:generate:00001"
    )
    deadline = time.time() + 300
    while not (run / "_state/generate/00000.json").exists():
        assert proc.poll() is None, open(f"{run}.log").read()[-4000:]
        assert time.time() < deadline, "generate never committed a shard"
        time.sleep(0.1)
    kill_tree(proc)
    assert not (run / "_state/generate/00001.json").exists()
    assert not (run / "dataset").exists()
    finish(start(run, ray_tmp, SAMPLE_WORLD=world), run)  # the same command again
    log = open(f"{run}.log").read()
    assert "finetune_generator: up to date, skipped" in log
    assert_same_dataset(run, reference)


def test_worker_killed_mid_batch_is_retried_without_loss(reference, tmp_path, ray_tmp):
    run = resumable_copy(reference, tmp_path / "worker")
    marker = tmp_path / "worker-died"
    fault = f"exit-once:generate:00001:{marker}"
    finish(start(run, ray_tmp, SAMPLE_WORLD=str(reference / "world"), JADE_FAULT=fault), run)
    assert marker.exists()  # the worker did die on its first attempt at 00001
    assert not (run / "_state/generate/_failed").exists()
    assert_same_dataset(run, reference)
