"""A shard that fails every time is recorded with its error, the rest of the run completes and publishes,
the CLI says so with exit code 1, and the same command run again retries it and ends where an uninterrupted
run ends (fake backends: the subject is bookkeeping)."""

import json
import shutil

import pyarrow.parquet as pq
import pytest

from jade.app.cli import main
from jade.pipeline.rundir import RunDir
from jade.stages.publish import Publish
from tests.fakerun import FAKE
from tests.tiny import TINY

DOWNSTREAM = [
    "_state/generate",
    "_state/answers",
    "_state/filter",
    "_state/publish",
    "_state/_progress",
    "_work/generate",
    "_work/answers",
    "_work/filter",
    "dataset",
    "rejected",
    "stats.json",
]


def dataset_rows(run_dir):
    rows = [
        r
        for f in sorted((run_dir / "dataset" / "data").glob("*.parquet"))
        for r in pq.read_table(f).to_pylist()
    ]
    return sorted(rows, key=lambda r: r["key"])


@pytest.fixture
def run_dir(fake_run, tmp_path, monkeypatch):
    """The fake run with ingest and the checkpoints kept and everything from generate on removed."""
    out = tmp_path / "run"
    shutil.copytree(fake_run, out)
    for rel in DOWNSTREAM:
        p = out / rel
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    monkeypatch.setenv(
        "SAMPLE_WORLD", str(fake_run / "world")
    )  # the same sources: ingest and finetune are reused
    return out


def test_failed_shard_recorded_rest_published_then_retried(fake_run, run_dir, monkeypatch, capsys):
    argv = [
        "run",
        "sample",
        "--out",
        str(run_dir),
        "--executor",
        "local",
        *(a for s in TINY + FAKE for a in ("--set", s)),
    ]
    monkeypatch.setenv("JADE_FAULT", "raise:generate:00001")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "1 shard(s) failed" in err and "00001 (generate: RuntimeError: injected fault" in err
    run = RunDir(run_dir)
    fps = json.loads(run.run_json.read_text())["stage_fingerprints"]
    rec = run.failed("generate")["00001"]
    assert "injected fault" in rec["error"] and "Traceback" in rec["traceback"]
    for stage in (
        "generate",
        "answers",
        "filter",
        "publish",
    ):  # not complete: a re-run does the failed shard again
        assert run.done(stage, fps[stage])["complete"] is False
    stats = json.loads(run.path(Publish.STATS).read_text())
    assert stats["failed_shards"] == {"00001": {"stage": "generate", "error": rec["error"]}}
    assert {r["provenance"]["source_shard"] for r in dataset_rows(run_dir)} == {"00000"}
    assert stats["images_ok"] == len(dataset_rows(run_dir))
    assert stats["images_in"] == stats["images_ok"] + stats["images_failed"]
    assert stats["questions_generated"] == stats["qa_kept"] + stats["qa_rejected"]
    assert main(["status", str(run_dir)]) == 0
    assert "failed: 00001" in capsys.readouterr().out

    monkeypatch.delenv("JADE_FAULT")
    assert main(argv) == 0  # the re-run retries the failed shard only
    assert "generate: up to date" not in capsys.readouterr().err
    assert run.failed("generate") == {}
    assert dataset_rows(run_dir) == dataset_rows(fake_run)
    ref = json.loads((fake_run / "stats.json").read_text())
    assert json.loads(run.path(Publish.STATS).read_text()) == ref
