"""`jade refilter`: a changed filter rule re-applied to the stored answers of both models, republished,
with no model loaded; the old rule gives back the original dataset byte for byte."""

import json
import shutil

import datasets
import pyarrow.parquet as pq
import pytest

from jade.app.manifest import ManifestError
from jade.app.refilter import RefilterError, refilter
from jade.app.runner import run_manifest
from jade.models import factory
from jade.pipeline.executor import LocalExecutor
from jade.pipeline.rundir import RunDir, read_json
from tests.fakerun import BUILT, FAKE
from tests.tiny import TINY

OUTPUTS = ["dataset/README.md", "stats.json"]
# Pairs the fake models answer alike only after VQA normalization ("Yes." / "yes", "two" / "2", ...).
NEEDS_NORMALIZATION = {"Is there a red circle?", "How many circles are there?", "Where is the red circle?"}
LOW_SCORE = {"How many circles are there?"}  # the fake filter's answer probability 0.25 (else >= 0.75)


def _no_model(*args, **kwargs):
    raise AssertionError("a model was loaded")


@pytest.fixture
def run(fake_run, tmp_path, monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(fake_run, out)
    monkeypatch.setenv(
        "SAMPLE_WORLD", str(fake_run / "world")
    )  # the copy's manifest names the original world
    monkeypatch.setattr(factory, "load", _no_model)
    built = len(BUILT)
    yield out
    assert len(BUILT) == built, "a backend was made"


def _files(run):
    parts = sorted((run / "dataset/data").glob("*.parquet")) + sorted((run / "rejected").glob("*.parquet"))
    return {str(p.relative_to(run)): p.read_bytes() for p in parts + [run / o for o in OUTPUTS]}


def _kept(run):
    return [
        qa
        for f in sorted((run / "dataset/data").glob("*.parquet"))
        for r in pq.read_table(f).to_pylist()
        for qa in r["qa"]
    ]


def _check_published(run, stats):
    rejected = pq.read_table(sorted((run / "rejected").glob("*.parquet"))).to_pylist()
    assert stats["questions_generated"] == stats["qa_kept"] + stats["qa_rejected"]
    assert len(rejected) == stats["qa_rejected"] and len(_kept(run)) == stats["qa_kept"]
    ds = datasets.load_dataset("parquet", data_files=str(run / "dataset/data/*.parquet"), split="train")
    assert len(ds) == stats["images_ok"] and sum(len(q) for q in ds["qa"]) == stats["qa_kept"]
    return rejected


def test_refilter_changes_the_rule_without_models(run, fake_run):
    original, orig_stats = _files(fake_run), read_json(fake_run / "stats.json")
    orig_kept = _kept(fake_run)
    moved = sum(q["question"] in NEEDS_NORMALIZATION for q in orig_kept)
    assert moved > 0

    refilter(str(run), ["filter.normalization=none"])
    stats = read_json(run / "stats.json")
    rejected = _check_published(run, stats)
    assert stats["qa_kept"] == orig_stats["qa_kept"] - moved
    assert (
        stats["rejected_by_reason"]["answer mismatch"]
        == orig_stats["rejected_by_reason"]["answer mismatch"] + moved
    )
    assert not {q["question"] for q in _kept(run)} & NEEDS_NORMALIZATION
    assert any(
        r["question"] == "How many circles are there?" and (r["answer"], r["filter_answer"]) == ("two", "2")
        for r in rejected
    )
    assert "normalization `none`" in (run / "dataset/README.md").read_text()
    # run.json and the completion records now describe the new rule: the same `jade run` does nothing more.
    summaries = run_manifest(
        "sample", str(run), TINY + FAKE + ["filter.normalization=none"], executor=LocalExecutor()
    )
    assert all(s.get("skipped") for s in summaries.values())
    meta = read_json(run / "run.json")
    assert all(RunDir(run).done(st, fp) for st, fp in meta["stage_fingerprints"].items())

    refilter(str(run), ["filter.normalization=vqa", "filter.min_score=0.5"])
    stats = read_json(run / "stats.json")
    _check_published(run, stats)
    low = sum(q["question"] in LOW_SCORE for q in orig_kept)
    assert stats["rejected_by_reason"]["low filter score"] == low > 0
    assert stats["qa_kept"] == orig_stats["qa_kept"] - low

    refilter(str(run), ["filter.min_score=0.0"])  # the original rule: the original dataset, byte for byte
    assert _files(run) == original
    summaries = run_manifest("sample", str(run), TINY + FAKE, executor=LocalExecutor())
    assert all(s.get("skipped") for s in summaries.values())


def test_run_with_a_new_rule_reuses_the_filter_answers(run):
    summaries = run_manifest(
        "sample", str(run), TINY + FAKE + ["filter.min_score=0.5"], executor=LocalExecutor()
    )
    assert [k for k, s in summaries.items() if not s.get("skipped")] == ["filter", "publish"]
    assert read_json(run / "stats.json")["rejected_by_reason"]["low filter score"] > 0


def test_refilter_never_runs_a_model(run):
    (run / "_state/answers/00001.json").unlink()  # the filter model has not answered a shard
    with pytest.raises(RefilterError, match=r"the filter model has not answered shard\(s\) 00001"):
        refilter(str(run), ["filter.normalization=none"])


def test_refilter_refuses_other_settings(run):
    for bad in (["generate.top_k=3"], ["filter.backend=hf"], ["filter.min_score"]):
        with pytest.raises(ManifestError, match="refilter changes only"):
            refilter(str(run), bad)
    assert json.loads((run / "stats.json").read_text()) == read_json(run / "stats.json")
