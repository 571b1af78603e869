"""Several runs on one machine, each on its own Ray instance, with no "Found multiple active Ray instances"
(slow tier: real Ray; about a minute on 2 busy CPUs).

The machine has, as a shared one does: a cluster that `ray start` began (it records itself in the temp dir's
`ray_current_cluster`, which a plain `ray.init()` joins), and run A, holding its own private cluster (it hangs
in ingest on purpose). Then:

- the control: a plain `ray.init()`, what `RayExecutor` called at commit 332efb7, logs "Found multiple active
  Ray instances" and joins the `ray start` cluster;
- run B (`jade run`, Ray executor, another directory) completes on a private cluster of its own: not A's,
  not the `ray start` one, and no such warning;
- run C into A's directory stops at once (exit 3) naming A's pid.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from tests.procs import signal_all
from tests.stages import real_inputs as ri

# a `ray start` head, a held run and a whole second run on Ray, in one test
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]
WARNING = "Found multiple active Ray instances"
ADDRESS = re.compile(r"ray: started a private local cluster for this run at (\S+)")


@pytest.fixture
def machine(tmp_path):
    """A private Ray temp dir (short: socket paths stay under 108 bytes) standing for the machine's /tmp/ray,
    and every process started under it killed at the end (never `ray stop`: it would stop others' Ray)."""
    ray_tmp = tempfile.mkdtemp(prefix="jm", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "JADE_FAULT")}
    env.update(HF_HUB_OFFLINE="1", RAY_AUTH_MODE="disabled", RAY_TMPDIR=ray_tmp, RAY_USAGE_STATS_ENABLED="0")
    started: list[subprocess.Popen] = []
    yield ray_tmp, env, started
    procs = [p for p in psutil.process_iter(["cmdline"]) if ray_tmp in " ".join(p.info["cmdline"] or [])]
    for proc in started:
        try:
            procs += [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    signal_all(procs, "kill")
    psutil.wait_procs(procs, timeout=30)
    shutil.rmtree(ray_tmp, ignore_errors=True)


def _manifest(root):
    (root / "wds").mkdir()
    for shard in (0, 1):
        ri.img2dataset_webdataset(root / "wds", shard, seed=shard)
    sources = ri.annotations(root / "ann")["sources"]
    images = {"format": "webdataset", "urls": [f"{root}/wds/{{00000..00001}}.tar"]}
    (root / "m.yaml").write_text(json.dumps({"name": "ray", "sources": {"images": images, **sources}}))
    return str(root / "m.yaml")


def _jade_run(manifest, out, env, log, **extra):
    argv = [
        sys.executable,
        "-m",
        "jade.app.cli",
        "run",
        manifest,
        "--out",
        str(out),
        "--stages",
        "ingest,dedupe",
    ]
    log = open(log, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        argv, env={**env, **extra}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait_for(path, pattern, proc, timeout=180):
    t0 = time.time()
    while time.time() - t0 < timeout:
        found = re.search(pattern, open(path).read())
        if found:
            return found
        assert proc.poll() is None, open(path).read()[-3000:]
        time.sleep(0.5)
    raise AssertionError(f"{pattern!r} not in {path}: " + open(path).read()[-3000:])


def test_runs_on_one_machine_each_use_their_own_instance(machine, tmp_path):
    ray_tmp, env, started = machine
    manifest = _manifest(tmp_path)
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    head = subprocess.run(
        [
            ray,
            "start",
            "--head",
            "--port=0",
            "--num-cpus=1",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert head.returncode == 0, head.stdout + head.stderr
    head_address = open(os.path.join(ray_tmp, "ray", "ray_current_cluster")).read().strip()

    a = _jade_run(manifest, tmp_path / "a", env, tmp_path / "a.log", JADE_FAULT="hang:ingest:00001")
    started.append(a)
    a_address = _wait_for(f"{tmp_path}/a.log", ADDRESS, a).group(1)
    _wait_for(f"{tmp_path}/a.log", r"ingest: \d+ of 2 shards to do", a)

    control = subprocess.run(
        [
            sys.executable,
            "-c",
            "import ray; ray.init(include_dashboard=False); "
            "print('joined', ray.get_runtime_context().gcs_address)",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert WARNING in control.stderr and f"joined {head_address}" in control.stdout

    t0 = time.time()
    b = _jade_run(manifest, tmp_path / "b", env, tmp_path / "b.log")
    started.append(b)
    assert b.wait(timeout=300) == 0, open(f"{tmp_path}/b.log").read()[-3000:]
    b_log = open(f"{tmp_path}/b.log").read()
    assert WARNING not in b_log and "ingest: done" in b_log
    b_address = ADDRESS.search(b_log).group(1)
    assert len({a_address, b_address, head_address}) == 3
    b_seconds = time.time() - t0

    c = _jade_run(manifest, tmp_path / "a", env, tmp_path / "c.log")
    assert c.wait(timeout=60) == 3
    assert (
        f"is in use by another run: host {socket.gethostname()}, pid {a.pid}, since"
        in open(tmp_path / "c.log").read()
    )
    assert a.poll() is None  # A still holds its directory and its cluster
    print(f"run B took {b_seconds:.0f}s")
