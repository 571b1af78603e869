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


@pytest.fixture
def head():
    temp_dir = tempfile.mkdtemp(prefix="jh", dir="/tmp")
    gcs, dash, client, agent = free_ports(4)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("RAY_ADDRESS", None)
    cmd = [
        str(BIN / "ray"),
        "start",
        "--head",
        f"--port={gcs}",
        f"--dashboard-port={dash}",
        f"--ray-client-server-port={client}",
        f"--dashboard-agent-listen-port={agent}",
        "--num-cpus=2",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    try:
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=120)
        yield f"http://127.0.0.1:{dash}"
    finally:
        stop_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_submit_sample_run_as_a_job(head, tmp_path, capsys):
    out = tmp_path / "run"
    assert submit.entrypoint_argv("sample", str(out), ["a=b c"])[-2:] == ["--set", "a=b c"]
    rc = submit.main(
        ["sample", "--address", head, "--out", str(out), "--wait", *(a for s in TINY for a in ("--set", s))]
    )
    printed = capsys.readouterr().out
    assert "ray job logs -f --address" in printed and "ray job status" in printed
    job_id = printed.split()[2].rstrip(":")
    if rc != 0:
        from ray.job_submission import JobSubmissionClient

        pytest.fail(JobSubmissionClient(head).get_job_logs(job_id)[-4000:])
    # the job ran the uploaded working directory's code, not this checkout's (nor an installed jade)
    code = Path(json.loads((out / "run.json").read_text())["code"])
    assert "working_dir_files" in code.parts or "runtime_resources" in str(code), code
    assert code != submit.ROOT and (code / "pipeline" / "shardmap.py").is_file()
    ds = datasets.load_dataset("parquet", data_files=str(out / "dataset/data/*.parquet"), split="train")
    stats = json.loads((out / "stats.json").read_text())
    assert len(ds) == stats["images_ok"] > 0 and len(set(ds["key"])) == len(ds)
