"""`load_dataset(DIR)` and `load_dataset("parquet", data_files=...)` return exactly a run's own rows, for several
runs loaded through one Hugging Face datasets cache, and again after one of them changes (a refilter).

Every run's folder is named `dataset`, so `datasets` caches `load_dataset(DIR)` under
`<cache>/dataset/default/0.0.0/<hash>`, where the hash covers only the card's YAML (configs and
dataset_info), never the data files. With the same card for every run (commit 332efb7), the first run
loaded on a machine was served for every later one. The card now lists the data files and carries their
count, sizes and a content fingerprint, so different data means a different cache entry."""

import json
import shutil

import datasets
import pyarrow.parquet as pq
import pytest
import yaml

from jade.app.refilter import refilter


def _own_rows(run):
    rows = [r for f in sorted((run / "dataset/data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return sorted((r["key"], json.dumps(r["qa"], sort_keys=True)) for r in rows)


def _loaded(ds):
    return sorted((r["key"], json.dumps(r["qa"], sort_keys=True)) for r in ds.select_columns(["key", "qa"]))


def _both_forms(run, cache):
    by_dir = datasets.load_dataset(str(run / "dataset"), split="train", cache_dir=str(cache))
    by_files = datasets.load_dataset(
        "parquet", data_files=str(run / "dataset/data/*.parquet"), split="train", cache_dir=str(cache)
    )
    return _loaded(by_dir), _loaded(by_files)


@pytest.fixture
def runs(fake_run, tmp_path, monkeypatch):
    monkeypatch.setenv("SAMPLE_WORLD", str(fake_run / "world"))  # the copies' manifests name this world
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(fake_run, a)
    shutil.copytree(fake_run, b)
    refilter(str(b), ["filter.normalization=none"])  # the same images, other kept pairs
    assert _own_rows(a) != _own_rows(b)
    return a, b


def test_each_run_loads_its_own_rows_through_one_cache(runs, tmp_path):
    a, b = runs
    cache = tmp_path / "hf-cache"
    for run in (a, b, a):
        assert _both_forms(run, cache) == (_own_rows(run), _own_rows(run)), run.name
    # One run changes (a refilter rewrites its rows): both forms serve the new rows, the other run its own.
    before = _own_rows(a)
    refilter(str(a), ["filter.min_score=0.5"])
    assert _own_rows(a) != before
    for run in (a, b):
        assert _both_forms(run, cache) == (_own_rows(run), _own_rows(run)), run.name


def test_the_card_lists_the_data_files_and_their_rows(runs):
    a, _ = runs
    head = yaml.safe_load((a / "dataset/README.md").read_text().split("---\n")[1])
    files = sorted(p.name for p in (a / "dataset/data").glob("*.parquet"))
    (config,) = head["configs"]
    assert config["config_name"] == "default" and config["data_files"] == [
        {"split": "train", "path": [f"data/{f}" for f in files]}
    ]
    assert "data fingerprint" in config["description"]
    stats = json.loads((a / "stats.json").read_text())
    (split,) = head["dataset_info"]["splits"]
    assert split["name"] == "train" and split["num_examples"] == stats["images_ok"] == len(_own_rows(a))
    assert head["dataset_info"]["download_size"] == sum(
        p.stat().st_size for p in (a / "dataset/data").iterdir()
    )
