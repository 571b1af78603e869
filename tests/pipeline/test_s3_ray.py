"""A run directory on object storage with the real tiny models on real Ray, against a real S3-compatible server
on 127.0.0.1 (moto's server mode: the `s3` fixture), compared with a local run of the same command:

- `jade run sample --out s3://...` from nothing (the sample world written locally and uploaded, the readers
  reading it from the store, fine-tuning through Ray Train with its resume state and checkpoints on the store,
  the engines loading local copies) gives the local run's dataset, rejected/, failures/ and stats.json, row for
  row; `jade eval` gives the same report. The local run reads the same sources (SAMPLE_WORLD names the s3
  run's world), so the fingerprints are the same;
- the driver killed with SIGKILL in the middle of generate (its lock left on the store), then the same command
  again: the lock is taken over, nothing done is redone, and the dataset is the same, row for row. The killed
  run starts from a server-side copy of the s3 run with everything from generate on removed.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import fsspec
import pytest

from jade.pipeline.rundir import RunDir
from tests.pipeline.test_faults_ray import kill_tree, rows
from tests.tiny import TINY

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]
SETS = [*TINY, "resources.threads=1"]  # one torch thread everywhere: outputs cannot depend on the pool size
DOWNSTREAM = ("_state/generate", "_state/answers", "_state/filter", "_state/publish", "_state/_progress")
DOWNSTREAM += (
    "_work/generate",
    "_work/answers",
    "_work/filter",
    "dataset",
    "rejected",
    "stats.json",
    ".lock",
)


@pytest.fixture(scope="module")
def ray_tmp():
    d = tempfile.mkdtemp(prefix="js", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _fs():
    return fsspec.filesystem("s3", use_listings_cache=False, skip_instance_cache=True)


def start(out: str, log, ray_tmp, *extra, **env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "JADE_FAULT", "SAMPLE_WORLD")}
    env.update(HF_HUB_OFFLINE="1", RAY_AUTH_MODE="disabled", RAY_TMPDIR=ray_tmp, **env_extra)
    argv = [sys.executable, "-m", "jade.app.cli", "run", "sample", "--out", out]
    argv += [a for s in [*SETS, *extra] for a in ("--set", s)]
    f = open(log, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(argv, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc, log, timeout=600):
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        raise
    assert rc == 0, open(log).read()[-4000:]


def s3_rows(url: str) -> list[dict]:
    run, folder = url.rsplit("/", 1)
    rd = RunDir(run)
    out = [r for rel in rd.glob(f"{folder}/*.parquet") for r in rd.read_table(rel).to_pylist()]
    return sorted(out, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def assert_same_dataset(url: str, local):
    data = s3_rows(f"{url}/dataset/data")
    assert len({r["key"] for r in data}) == len(data) > 0
    assert data == rows(local / "dataset" / "data")
    assert s3_rows(f"{url}/rejected") == rows(local / "rejected")
    assert s3_rows(f"{url}/failures") == rows(local / "failures")
    stats = RunDir(url).read_json("stats.json")
    assert stats == json.loads((local / "stats.json").read_text())
    assert stats["images_ok"] == len(data) and stats["qa_kept"] == sum(len(r["qa"]) for r in data)


@pytest.fixture(scope="module")
def s3_ref(s3, tmp_path_factory, ray_tmp):
    url, log = f"{s3}/ray-ref", tmp_path_factory.mktemp("s3ray") / "ref.log"
    finish(start(url, log, ray_tmp), log)
    return url


@pytest.fixture(scope="module")
def local_ref(s3_ref, tmp_path_factory, ray_tmp):
    out = tmp_path_factory.mktemp("s3ray") / "local"
    finish(start(str(out), f"{out}.log", ray_tmp, SAMPLE_WORLD=f"{s3_ref}/world"), f"{out}.log")
    return out


def test_a_run_into_s3_with_real_models_equals_the_local_run(s3_ref, local_ref):
    assert_same_dataset(s3_ref, local_ref)
    run = RunDir(s3_ref)
    keys = set(run.glob("**"))
    assert {"world/world.json", "checkpoints/generator/jade_model.json", "_logs/run.log"} <= keys
    assert not [k for k in keys if k.startswith(("checkpoints/.", "_work/finetune")) or k == ".lock"]
    meta = run.read_json("checkpoints/generator/jade_model.json")
    assert meta == json.loads((local_ref / "checkpoints/generator/jade_model.json").read_text()) | {
        "train_metrics": meta["train_metrics"]  # timings differ
    }
    env = {k: v for k, v in os.environ.items() if k != "SAMPLE_WORLD"}
    for target in (s3_ref, str(local_ref)):
        proc = subprocess.run(
            [sys.executable, "-m", "jade.app.cli", "eval", target], env=env, capture_output=True
        )
        assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    assert run.read_json("eval.json") == json.loads((local_ref / "eval.json").read_text())


def test_a_sigkill_mid_generate_on_s3_then_rerun_equals_the_uninterrupted_run(
    s3_ref, local_ref, tmp_path, ray_tmp
):
    fs, src, url = _fs(), s3_ref[len("s3://") :], "s3://jade/ray-killed"
    keys = [k for k in fs.find(src) if not k[len(src) + 1 :].startswith(DOWNSTREAM)]
    fs.copy(keys, [f"jade/ray-killed/{k[len(src) + 1 :]}" for k in keys])  # server-side
    log, world = tmp_path / "killed.log", f"{s3_ref}/world"
    # Shard 00001 hangs in generate, so the kill lands at a known point: 00000 committed, 00001 in flight.
    proc = start(
        url, log, ray_tmp, "resources.generate.actors=2", SAMPLE_WORLD=world, JADE_FAULT="hang:generate:00001"
    )
    run = RunDir(url)
    deadline = time.time() + 400
    while not run.exists("_state/generate/00000.json"):
        assert proc.poll() is None, open(log).read()[-4000:]
        assert time.time() < deadline, "generate never committed a shard"
        time.sleep(0.5)
    kill_tree(proc)
    assert not run.exists("_state/generate/00001.json") and not run.glob("dataset/**")
    assert json.loads(run.read_bytes(".lock"))["pid"] == proc.pid  # the killed driver's lock, left behind
    finish(start(url, log, ray_tmp, SAMPLE_WORLD=world), log)  # the same command again
    text = open(log).read()
    assert "finetune_generator: up to date, skipped" in text and "generate: 1 of 2 shards to do" in text
    assert_same_dataset(url, local_ref)
    assert not run.exists(".lock")
