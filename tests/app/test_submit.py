"""`make submit` against a real local Ray head (`ray start --head`, private ports and temp dir): a tiny
sample run submitted as a Ray job, waited for, and its published dataset loaded."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import datasets
import psutil
import pytest

from jade.app import submit
from tests.procs import signal_all
from tests.tiny import TINY

# in the fast tier: CI runs it against a real local head
pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]
BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def stop_head(temp_dir: str) -> None:
    """Stop only this head: the processes whose command line names its temp dir, and their children
    (`ray stop` would stop every Ray cluster of this user on the machine)."""
    procs = {}
    for p in psutil.process_iter(["cmdline"]):
        if p.pid != os.getpid() and temp_dir in " ".join(p.info["cmdline"] or []):
            try:
                procs.update({q.pid: q for q in [p, *p.children(recursive=True)]})
            except psutil.NoSuchProcess:
                pass
    procs = list(procs.values())
    signal_all(procs, "terminate")
    _, alive = psutil.wait_procs(procs, timeout=20)
    signal_all(alive, "kill")


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A head started as docs/cluster.md says (step 1: a token; step 2: `make ray-head` with token auth), from
    a shell whose PATH does not name the project's environment; only its ports and temp dir are private."""
    home = tmp_path_factory.mktemp("home")
    temp_dir = tempfile.mkdtemp(prefix="jh", dir="/tmp")
    gcs, dash, client, agent = free_ports(4)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != BIN)
    env = {**os.environ, "HOME": str(home), "PATH": path, "RAY_AUTH_MODE": "token", "HF_HUB_OFFLINE": "1"}
    env.pop("RAY_ADDRESS", None)
    env.pop("VIRTUAL_ENV", None)
    private = (
        f"--port={gcs} --dashboard-port={dash} --ray-client-server-port={client} "
        f"--dashboard-agent-listen-port={agent} --num-cpus=2 --temp-dir={temp_dir} --disable-usage-stats"
    )
    try:
        subprocess.run([str(BIN / "ray"), "get-auth-token", "--generate"], env=env, check=True, timeout=120)
        subprocess.run(
            ["make", "-C", str(ROOT), "ray-head", f"RAY_ARGS={private}"],
            env=env,
            check=True,
            capture_output=True,
            timeout=180,
        )
        yield f"http://127.0.0.1:{dash}", env
    finally:
        stop_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit_cli(head, *args):
    """`python -m jade.app.submit` (what `make submit` runs) from the docs' step 3: token auth, ~/.ray's token."""
    address, env = head
    cmd = [sys.executable, "-m", "jade.app.submit", *args[:1], "--address", address, *args[1:]]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=560, cwd=ROOT)


def test_submit_sample_run_as_a_job(head, tmp_path):
    out = tmp_path / "run"
    assert submit.entrypoint_argv("sample", str(out), ["a=b c"])[-2:] == ["--set", "a=b c"]
    res = submit_cli(head, "sample", "--out", str(out), "--wait", *(a for s in TINY for a in ("--set", s)))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ray job logs -f --address" in res.stdout and "ray job status" in res.stdout
    # the job ran the uploaded working directory's code, not this checkout's (nor an installed jade)
    code = Path(json.loads((out / "run.json").read_text())["code"])
    assert "working_dir_files" in code.parts or "runtime_resources" in str(code), code
    assert code != submit.ROOT and (code / "pipeline" / "shardmap.py").is_file()
    ds = datasets.load_dataset("parquet", data_files=str(out / "dataset/data/*.parquet"), split="train")
    stats = json.loads((out / "stats.json").read_text())
    assert len(ds) == stats["images_ok"] > 0 and len(set(ds["key"])) == len(ds)


def test_a_job_that_dies_at_start_makes_submit_fail(head, tmp_path):
    res = submit_cli(head, "sample", "--out", str(tmp_path / "run"), "--set", "generate.top_k=0")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAILED; its last log lines" in res.stderr and "generate.top_k: must be at least 1" in res.stderr
