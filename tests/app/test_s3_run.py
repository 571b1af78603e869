"""`jade run --out s3://...` and the commands on such a run, against a real S3-compatible server on 127.0.0.1
(moto's server mode: the `s3` fixture), with the fake backends of tests/fakerun.py where the models are not
the subject (tests/pipeline/test_s3_ray.py runs the real tiny models on Ray, and kills the driver):

- a run into s3:// gives the local run's dataset, rejected/, failures/, stats.json and card, row for row: the
  store holds a copy of the session's local fake run with everything from ingest on removed, and the same
  sources (SAMPLE_WORLD names the local run's world), so the fingerprints and checkpoints are the local run's;
  the engines load their checkpoints from local copies of the store's;
- `jade status` reads its records; `jade eval` and `jade refilter` on it give what they give on the local run
  (slow tier);
- `datasets.load_dataset("parquet", data_files="s3://...", storage_options=...)` loads the result;
- a second `jade run` on a held prefix stops with exit code 3;
- `jade pretrain` on an s3 run stages the dataset through the local cache, uploads pretrain/, and resumes
  from the store's checkpoint (slow tier).
"""

import json
import logging
import os
import shutil
import time
from pathlib import Path

import datasets
import fsspec
import pyarrow.parquet as pq
import pytest

from jade.app.cli import main
from jade.app.runner import run_manifest
from jade.pipeline.executor import LocalExecutor
from jade.pipeline.rundir import RunDir, RunLock
from jade.reports.evaluate import evaluate_run
from tests.fakerun import FAKE
from tests.tiny import TINY

pytestmark = pytest.mark.timeout(
    600
)  # the module fixture runs the factory (and may make the session's fake run)

# everything the stages from ingest on write: the copy on the store starts after the training examples and
# the fine-tuned checkpoints
DOWNSTREAM = ("_state/ingest", "_state/dedupe", "_state/generate", "_state/answers", "_state/filter")
DOWNSTREAM += ("_state/publish", "_state/_progress", "_work/ingest", "_work/dedupe", "_work/generate")
DOWNSTREAM += ("_work/answers", "_work/filter", "dataset", "rejected", "stats.json", "_logs")


def _fs():
    return fsspec.filesystem("s3", use_listings_cache=False, skip_instance_cache=True)


def _upload(local: Path, url: str, skip=()) -> None:
    files = [p for p in sorted(local.rglob("*")) if p.is_file()]
    rels = [str(p.relative_to(local)) for p in files]
    keep = [(p, r) for p, r in zip(files, rels, strict=True) if not r.startswith(skip)]
    keep = [
        (p, r) for p, r in keep if not (r.startswith("failures/") and r.count("/") == 1)
    ]  # ingest's, dedupe's
    _fs().put([str(p) for p, _ in keep], [f"{url[len('s3://') :]}/{r}" for _, r in keep])


def _rows_local(folder: Path) -> list[dict]:
    out = [r for f in sorted(folder.glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return sorted(out, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _rows_s3(url: str) -> list[dict]:
    run, folder = url.rsplit("/", 1)
    rd = RunDir(run)
    out = [r for rel in rd.glob(f"{folder}/*.parquet") for r in rd.read_table(rel).to_pylist()]
    return sorted(out, key=lambda r: json.dumps(r, sort_keys=True, default=str))


@pytest.fixture(scope="module")
def s3_run(fake_run, s3):
    url = f"{s3}/fake"
    _upload(fake_run, url, DOWNSTREAM)
    saved, level = os.environ.get("SAMPLE_WORLD"), logging.getLogger("jade").level
    os.environ["SAMPLE_WORLD"] = str(fake_run / "world")  # the local run's sources: its fingerprints
    logging.getLogger("jade").setLevel(logging.INFO)  # the run's log gets jade's lines (as under the CLI)
    try:
        summaries = run_manifest("sample", url, TINY + FAKE, executor=LocalExecutor())
    finally:
        os.environ.pop("SAMPLE_WORLD") if saved is None else os.environ.update(SAMPLE_WORLD=saved)
        logging.getLogger("jade").setLevel(level)
    assert summaries["finetune_generator"]["skipped"] and not summaries["ingest"]["skipped"]
    return url


def test_a_run_into_s3_gives_the_local_runs_dataset_row_for_row(s3_run, fake_run):
    run = RunDir(s3_run)
    for folder in ("dataset/data", "rejected", "failures"):
        local = _rows_local(fake_run / folder)
        assert local and _rows_s3(f"{s3_run}/{folder}") == local, folder
    assert run.read_json("stats.json") == json.loads((fake_run / "stats.json").read_text())
    assert run.read_bytes("dataset/README.md") == (fake_run / "dataset/README.md").read_bytes()
    assert run.read_json("_state/publish/_stage.json")["complete"]
    assert not run.exists(".lock") and b"jade run: started in s3://" in run.read_bytes("_logs/run.log")
    # the generator's and the filter's checkpoints were copied down once, for the engines
    copies = list((Path(os.environ["JADE_CACHE"]) / "copies").glob("*/*"))
    assert sorted(p.name for p in copies if (p / "jade_model.json").exists()) == ["filter", "generator"]


def test_status_reads_the_records_on_s3(s3_run, capsys):
    assert main(["status", s3_run, "--shards"]) == 0
    out = capsys.readouterr().out
    assert f"run {s3_run}: not running" in out and "publish              done     2/2 shards" in out
    assert (
        "finetune_generator   done" in out
        and "    00001: images_converted=0; images_failed=1; images_in=" in out
    )
    assert main(["status", f"{s3_run}-nothing-here"]) == 2
    assert "no such directory" in capsys.readouterr().err


@pytest.mark.slow
def test_eval_and_refilter_on_s3_give_what_they_give_locally(s3_run, fake_run, tmp_path, capsys):
    local = tmp_path / "run"
    shutil.copytree(fake_run, local)
    assert main(["eval", s3_run]) == 0
    capsys.readouterr()
    assert RunDir(s3_run).read_json("eval.json") == json.loads(json.dumps(evaluate_run(local), default=str))
    assert main(["refilter", s3_run, "--set", "filter.min_score=0.5"]) == 0
    assert main(["refilter", str(local), "--set", "filter.min_score=0.5"]) == 0
    capsys.readouterr()
    stats = RunDir(s3_run).read_json("stats.json")
    assert stats == json.loads((local / "stats.json").read_text())
    assert stats["qa_kept"] < json.loads((fake_run / "stats.json").read_text())["qa_kept"]
    assert _rows_s3(f"{s3_run}/dataset/data") == _rows_local(local / "dataset/data")


def test_load_dataset_reads_the_published_result_from_s3(s3_run, fake_run, monkeypatch):
    # datasets refuses every remote URL, s3:// included, under HF_HUB_OFFLINE=1 (the suite's setting): a user
    # with it set runs this with HF_DATASETS_OFFLINE=0
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    ds = datasets.load_dataset(
        "parquet",
        data_files=f"{s3_run}/dataset/data/*.parquet",
        storage_options={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]},
        split="train",
    )
    assert sorted(ds["key"]) == sorted(r["key"] for r in _rows_local(fake_run / "dataset/data"))
    assert ds[0]["image"].size == (ds[0]["width"], ds[0]["height"])  # decoded to a PIL image


def test_a_second_run_on_a_held_prefix_stops_with_exit_code_3(s3, capsys):
    url = f"{s3}/held"
    with RunLock(RunDir(url)):
        t0 = time.time()
        assert (
            main(
                [
                    "run",
                    "sample",
                    "--out",
                    url,
                    "--executor",
                    "local",
                    *[a for s in TINY for a in ("--set", s)],
                ]
            )
            == 3
        )
        assert time.time() - t0 < 30
    err = capsys.readouterr().err
    assert f"{url} is in use by another run: host" in err and f"pid {os.getpid()}" in err
    assert RunDir(url).glob("**") == []  # nothing was written: not even the world


@pytest.mark.slow
def test_pretrain_on_s3_stages_the_dataset_uploads_and_resumes(s3, tmp_path, caplog):
    from tests.app.test_pretrain import ARCH, make_published

    local = tmp_path / "local"
    make_published(local)
    url = f"{s3}/pretrain-run"
    _upload(local, url)

    def pretrain(target: str, steps: int) -> int:
        sets = [f"steps={steps}", "batch_size=24", f"arch={ARCH}", "checkpoint_every=2", "eval_fraction=0.25"]
        return main(["pretrain", target, "--executor", "local", *[a for s in sets for a in ("--set", s)]])

    assert pretrain(url, 3) == 0
    run = RunDir(url)
    assert run.read_json("pretrain/metrics.json")["steps"] == 3
    assert run.read_json("pretrain/checkpoint/state.json")["step"] == 3 and run.glob("pretrain/tb/events.*")
    caplog.clear()
    with caplog.at_level("INFO", logger="jade"):
        assert pretrain(url, 5) == 0  # a longer budget resumes from the store's checkpoint
    assert "resumed from step 3" in caplog.text
    assert pretrain(str(local), 5) == 0  # the same on a local run directory, from scratch
    metrics = run.read_json("pretrain/metrics.json")
    assert (
        metrics["steps"] == 5
        and metrics["task_shares"] == json.loads((local / "pretrain/metrics.json").read_text())["task_shares"]
    )
