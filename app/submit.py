"""`make submit`: the same run as `make generate`, as a Ray job on a cluster (Ray Jobs SDK).

The repository is the job's working directory (uploaded without .venv, runs/, .git and caches); the
entrypoint is `python -m jade.app.cli run DATA --out OUT [--set ...]` (the working directory's own code), built as an argument list and quoted with shlex (never
a shell line pasted from manifest strings). The environment variables the manifest reads (`${CC3M_ROOT}`
...) and the offline settings are passed to the job when set here. OUT should be on storage that every node
and you can reach (a shared mount); a relative OUT is made absolute against the current directory.

With `RAY_AUTH_MODE=token`, the client sends the token from `RAY_AUTH_TOKEN`, `RAY_AUTH_TOKEN_PATH` or
`~/.ray/auth_token` (Ray's own lookup order).

After submitting, it waits until the job has started the run (its log shows `STARTED`, which `jade run` prints
once its code and the manifest are loaded and the run directory is locked), or, with `--wait`, until the job
ends. A job that fails before that (a node without the project's environment, an invalid manifest, OUT not
writable) makes it print the job's last log lines and exit 1.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from pathlib import Path

from jade.app.manifest import ManifestError, resolve_manifest_path

ROOT = Path(__file__).resolve().parent.parent
EXCLUDES = [".venv", "runs", ".git", "**/__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache", "build"]
PASS_ENV = ("HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM", "HF_HOME", "JADE_FAULT")
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
STARTED = "jade run: started"  # what `jade run` logs once it holds the run directory (app.runner)
LOG_LINES = 30  # of a failed job, shown


def entrypoint_argv(data: str, out: str, sets: list[str] | None = None) -> list[str]:
    """``python -m jade.app.cli run ...``: run as a module from the job's working directory (the uploaded
    checkout), so the job imports that code, not a `jade` installed on the node."""
    argv = ["python", "-m", "jade.app.cli", "run", data, "--out", out]
    for s in sets or []:
        argv += ["--set", s]
    return argv


def manifest_env(data: str) -> dict[str, str]:
    """The ${VAR}s the manifest reads, with their values here (the job expands them on the cluster)."""
    text = resolve_manifest_path(data).read_text()
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)) | set(PASS_ENV)
    return {k: os.environ[k] for k in sorted(names) if k in os.environ and k != "SAMPLE_WORLD"}


def submit(
    address: str, data: str, out: str, sets: list[str] | None = None, job_id: str | None = None
) -> str:
    """Submit the run; returns the job's submission id."""
    from ray.job_submission import JobSubmissionClient

    if Path(data).suffix in (".yaml", ".yml"):
        data = str(Path(data).resolve())  # a manifest file outside the repo would not be uploaded
    if "://" not in out:
        out = str(Path(out).resolve())
    client = JobSubmissionClient(address)
    return client.submit_job(
        entrypoint=shlex.join(entrypoint_argv(data, out, sets)),
        submission_id=job_id,
        runtime_env={"working_dir": str(ROOT), "excludes": EXCLUDES, "env_vars": manifest_env(data)},
        metadata={"jade_data": data, "jade_out": out},
    )


def wait(
    address: str, job_id: str, until_started: bool = False, timeout: float = 3600.0, poll: float = 2.0
) -> tuple[str, str]:
    """Wait for the job to end, or (``until_started``) only until its log shows that the run started: returns
    (its status then, its log)."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    deadline = time.time() + timeout
    while True:
        status = str(client.get_job_status(job_id)).split(".")[-1]
        logs = client.get_job_logs(job_id) if status in TERMINAL or until_started else ""
        if status in TERMINAL or (until_started and STARTED in logs):
            return status, logs
        if time.time() > deadline:
            raise TimeoutError(f"job {job_id} still {status} after {timeout:.0f}s")
        time.sleep(poll)


def tail(logs: str, n: int = LOG_LINES) -> str:
    return "\n".join(logs.rstrip().splitlines()[-n:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jade.app.submit", description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="a manifest name under manifests/ or a path to a YAML file")
    p.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="the cluster's dashboard, http://HEAD:8265 (default: RAY_ADDRESS)",
    )
    p.add_argument("--out", help="run directory on shared storage (default runs/<manifest name>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a manifest key")
    p.add_argument("--job-id", help="submission id (default: chosen by Ray)")
    p.add_argument("--wait", action="store_true", help="wait for the job to end and exit with its status")
    p.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds to wait for the run to start (or, --wait, end)"
    )
    args = p.parse_args(argv)
    if not args.address:
        p.error("give --address http://HEAD:8265 (or set RAY_ADDRESS)")
    out = args.out or f"runs/{Path(args.data).stem}"
    out = out if "://" in out else str(Path(out).resolve())
    try:
        job_id = submit(args.address, args.data, out, args.set, args.job_id)
    except ManifestError as e:
        print(f"jade submit: {e}", file=sys.stderr)
        return 2
    addr = shlex.quote(args.address)
    print(
        f"submitted job {job_id}: {shlex.join(entrypoint_argv(args.data, out, args.set))}\n"
        f"  follow its log:  ray job logs -f --address {addr} {job_id}\n"
        f"  its status:      ray job status --address {addr} {job_id}\n"
        f"  stop it:         ray job stop --address {addr} {job_id}\n"
        f"  its progress:    jade status {shlex.quote(out)}   (where OUT is mounted)"
    )
    status, logs = wait(args.address, job_id, until_started=not args.wait, timeout=args.timeout)
    if status in ("FAILED", "STOPPED") or (args.wait and status != "SUCCEEDED"):
        print(f"job {job_id}: {status}; its last log lines:\n{tail(logs)}", file=sys.stderr)
        return 1
    print(f"job {job_id}: {status}" + ("" if args.wait else " (the run has started)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
