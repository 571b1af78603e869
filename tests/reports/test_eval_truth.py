"""`jade eval` on published images without a truth (a run with other sources than the sample world, or a
world whose truth lacks some keys): those images are not checked, the report says how many were skipped (and
a warning), and every figure is what it is on the images that have a truth alone. With no truth for any image,
it refuses with a message and a non-zero exit. (At commit 332efb7 their regions counted as wrong and their
questions as unverifiable, silently.)"""

import json
import logging
import shutil

import pyarrow.parquet as pq
import pytest

from jade.app.cli import main
from jade.reports.evaluate import evaluate_run


def _copy(fake_run, dest):
    for part in ("dataset", "rejected", "world/truth"):
        shutil.copytree(fake_run / part, dest / part)
    shutil.copy(fake_run / "stats.json", dest / "stats.json")
    return dest


def _keep_only(folder, keys):
    for f in sorted(folder.glob("*.parquet")):
        t = pq.read_table(f)
        pq.write_table(t.filter([k in keys for k in t.column("key").to_pylist()]), f)


def _truth(run):
    return run / "world/truth/cc3m_scene_graphs.json"


def test_images_without_truth_are_skipped_and_counted(fake_run, tmp_path, caplog):
    run = _copy(fake_run, tmp_path / "run")
    rows = [r for f in sorted((run / "dataset/data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    truth = json.loads(_truth(run).read_text())
    dropped = [r for r in rows[::2]]
    for r in dropped:
        del truth[r["provenance"]["source_key"]]
    _truth(run).write_text(json.dumps(truth))
    with caplog.at_level(logging.WARNING, logger="jade"):
        report = evaluate_run(run)
    assert report["images_without_truth"] == len(dropped) and report["images"] == len(rows) - len(dropped)
    assert f"{len(dropped)} of {len(rows)} published images have no truth and are not checked" in caplog.text
    # the same figures as a run that published only the images with a truth
    alone = _copy(fake_run, tmp_path / "alone")
    kept = {r["key"] for r in rows} - {r["key"] for r in dropped}
    _keep_only(alone / "dataset/data", kept)
    _keep_only(alone / "rejected", kept)
    ref = evaluate_run(alone)
    assert ref["images_without_truth"] == 0
    skip = {"images_without_truth", "model_accuracy"}
    assert {k: v for k, v in report.items() if k not in skip} == {
        k: v for k, v in ref.items() if k not in skip
    }


def test_no_truth_for_any_image_is_refused(fake_run, tmp_path, capsys):
    run = _copy(fake_run, tmp_path / "run")
    _truth(run).write_text(json.dumps({"not-a-published-key": {}}))
    with pytest.raises(SystemExit) as e:
        main(["eval", str(run)])
    rows = sum(pq.read_metadata(f).num_rows for f in (run / "dataset/data").glob("*.parquet"))
    assert str(e.value).startswith(f"jade eval: none of the {rows} published images has a truth")
    assert not (run / "eval.json").exists()
