"""What `jade run` checks before any work, and the lock on a run directory.

- A glob or brace range that matches nothing is reported before the sample world is written (at commit
  332efb7 it came after 19 s and 62 MB of world), also when other URLs of the list are under the world.
- A second `jade run` into a directory that a live run holds stops at once (exit 3), naming the holder's
  host, pid and start time, and touches nothing; a stale lock (its pid gone on this host, or not refreshed
  for `STALE_S` on another host) is taken over, and released when the run ends.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from jade.app.cli import main
from jade.pipeline.rundir import RunDir, RunLock, RunLockedError
from tests.stages import real_inputs as ri

HOLD = (
    "import sys, time\nfrom jade.pipeline.rundir import RunDir, RunLock\nwith RunLock(RunDir(sys.argv[1])):\n"
    "    print('held', flush=True)\n    time.sleep(120)\n"
)


@pytest.mark.parametrize(
    "urls", [["/nonexistent/cc3m/*.tar"], ["${SAMPLE_WORLD}/cc3m/*.tar", "/nonexistent/{0..3}.tar"]]
)
def test_a_glob_that_matches_nothing_is_reported_before_the_world_is_written(tmp_path, capsys, urls):
    out = tmp_path / "out"
    assert main(["run", "sample", "--out", str(out), "--set", f"sources.images.urls={json.dumps(urls)}"]) == 2
    err = capsys.readouterr().err
    assert "jade: invalid manifest: sources.images.urls:" in err and "/nonexistent/" in err
    assert not out.exists()  # no world, no lock, nothing


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """A manifest of small real-format inputs (no sample world): `--stages ingest` takes a few seconds."""
    root = tmp_path_factory.mktemp("lock-inputs")
    (root / "wds").mkdir()
    ri.img2dataset_webdataset(root / "wds", 0, seed=1)
    sources = ri.annotations(root / "ann")["sources"]
    path = root / "m.yaml"
    path.write_text(
        json.dumps(
            {
                "name": "lock",
                "sources": {"images": {"format": "webdataset", "urls": [f"{root}/wds/00000.tar"]}, **sources},
            }
        )
    )
    return str(path)


def _run(manifest, out):
    return main(["run", manifest, "--out", str(out), "--executor", "local", "--stages", "ingest"])


def test_a_held_run_directory_stops_a_second_run_at_once(manifest, tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        lock = json.loads((out / ".lock").read_text())
        import jade.app.runner  # noqa: F401 - imported before the clock starts: the check is that it never waits

        t0 = time.time()
        assert _run(manifest, out) == 3
        assert time.time() - t0 < 15  # the holder sleeps 120 s
        err = capsys.readouterr().err
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lock["since"]))
        assert (
            f"is in use by another run: host {socket.gethostname()}, pid {holder.pid}, since {since}" in err
        )
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing else was touched
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_and_released(manifest, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that is gone: the run that held the lock was killed
    (out / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": 1.0}))
    assert _run(manifest, out) == 0
    assert not (out / ".lock").exists()  # released at the end
    assert json.loads((out / "_state/ingest/00000.json").read_text())["images"] > 0
    capsys.readouterr()


def test_another_hosts_lock_is_stale_only_without_heartbeat(tmp_path, monkeypatch):
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    lock = run.root / ".lock"
    lock.write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": time.time()}))
    with pytest.raises(RunLockedError, match="host elsewhere, pid 1"):  # refreshed just now
        RunLock(run).__enter__()
    old = time.time() - RunLock.STALE_S - 5
    os.utime(lock, (old, old))  # its heartbeat stopped: taken over
    with RunLock(run):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):  # held by us now
            RunLock(run).__enter__()
    assert not lock.exists()


def test_the_heartbeat_keeps_a_lock_fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(RunLock, "HEARTBEAT_S", 0.05)
    run = RunDir(tmp_path / "run")
    with RunLock(run):
        before = (run.root / ".lock").stat().st_mtime
        time.sleep(0.3)
        assert (run.root / ".lock").stat().st_mtime > before


def test_refilter_and_status_name_the_holder(fake_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        since = time.strftime(
            "%Y-%m-%d %H:%M:%S", time.localtime(json.loads((run / ".lock").read_text())["since"])
        )
        assert main(["refilter", str(run), "--set", "filter.min_score=0.5"]) == 3
        assert f"pid {holder.pid}, since {since}" in capsys.readouterr().err
        assert main(["status", str(run)]) == 0
        assert (
            f"held by host {socket.gethostname()} pid {holder.pid} since {since}" in capsys.readouterr().out
        )
    finally:
        holder.kill()
        holder.wait()
