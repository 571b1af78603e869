"""Resources in the manifest (actor pools, GPUs) and the progress figures `jade status` shows."""

import pytest

from jade.app.manifest import ManifestError, load_manifest
from jade.pipeline.executor import RayExecutor
from jade.pipeline.progress import Progress, fmt_eta, stage_progress
from jade.pipeline.rundir import RunDir


@pytest.mark.parametrize(
    "sets, pool",
    [
        ([], (1, 1)),
        (["resources.generate.actors=3"], (3, 3)),
        (["resources.generate={min_actors: 1, max_actors: 4}"], (1, 4)),
        (["resources.generate={min_actors: 2}"], (2, 2)),
        (["resources.generate={max_actors: 3}"], (1, 3)),
    ],
)
def test_actor_pool_sizes(sets, pool, monkeypatch):
    monkeypatch.setenv("SAMPLE_WORLD", "/tmp/w")
    assert load_manifest("sample", sets).resources.generate.pool() == pool


def test_bad_pool_names_the_key(monkeypatch):
    monkeypatch.setenv("SAMPLE_WORLD", "/tmp/w")
    with pytest.raises(ManifestError, match=r"resources.filter: need min_actors <= max_actors \(got 3, 2\)"):
        load_manifest("sample", ["resources.filter={min_actors: 3, max_actors: 2}"])


def test_gpus_asked_on_a_cluster_without_them_fail_fast():
    ex = RayExecutor()
    ex.gpus = lambda: 0  # a cluster without GPUs (no Ray started)
    with pytest.raises(RuntimeError, match=r"num_gpus=0.5 but the Ray cluster has no GPUs"):
        ex.check_gpus(0.5, "resources.generate")
    ex.check_gpus(0, "resources.generate")  # none asked: fine


def test_model_stages_take_a_gpu_by_default_where_there_is_one(monkeypatch):
    monkeypatch.setenv("SAMPLE_WORLD", "/tmp/w")
    r = load_manifest("sample").resources
    assert r.generate.num_gpus is None and r.filter.num_gpus is None and r.ingest.num_gpus == 0.0
    ex = RayExecutor()
    for cluster_gpus, want in ((0, 0.0), (8, 1.0)):
        ex.gpus = lambda n=cluster_gpus: n
        assert ex.stage_gpus(r.generate) == want and ex.stage_gpus(r.ingest) == 0.0
    assert ex.stage_gpus(load_manifest("sample", ["resources.filter.num_gpus=0.5"]).resources.filter) == 0.5


def test_progress_rate_and_eta_from_records(tmp_path, monkeypatch):
    run = RunDir(tmp_path)
    now = [100.0]
    monkeypatch.setattr("time.time", lambda: now[0])
    Progress(run, "generate", "fp1", total=4)  # started at t=100
    now[0] = 110.0
    run.mark_done("generate", "s0", {"shard": "00000", "images": 50}, "00000")  # finished at t=110
    run.mark_done("generate", "old", {"shard": "00001", "images": 50}, "00001")  # another fingerprint
    shard_fps = {"00000": "s0", "00001": "s1", "00002": "s2", "00003": "s3"}  # each shard's current one
    p = stage_progress(run, "generate", "fp1", shard_fps)
    assert p == {"shards_total": 4, "shards_done": 1, "images_per_s": 5.0, "eta_s": 30.0}
    assert stage_progress(run, "generate", "other", shard_fps) is None
    assert fmt_eta(30.0) == "ETA 30s" and fmt_eta(125) == "ETA 2m05s" and fmt_eta(None) == "ETA ?"


def test_run_directory_takes_paths_and_file_uris_and_says_what_else_to_do(tmp_path):
    from jade.pipeline.rundir import RunDir, RunDirError

    assert RunDir(f"file://{tmp_path}/r").root == (tmp_path / "r").resolve()
    assert RunDir(tmp_path / "r").root == (tmp_path / "r").resolve()
    s3 = RunDir("s3://bucket/runs/cc3m/")  # an object store: no local path, a URL (tests/pipeline/test_s3.py)
    assert not s3.local and s3.url == "s3://bucket/runs/cc3m" and s3.uri("run.json").endswith("cc3m/run.json")
    with pytest.raises(RunDirError, match="object store"):
        _ = s3.root
    with pytest.raises(ValueError, match="an fsspec URL whose backend is installed"):
        RunDir("nosuchprotocol://bucket/runs/cc3m")
