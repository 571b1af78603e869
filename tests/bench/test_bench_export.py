"""bench.export: a scaled copy is a new dataset with the counts times N, and each export is measured in its
own process with the counts the export itself reports."""

import json

from bench.export import main, scaled_copy
from jade.formats.export_common import data_files, plan, rows
from tests.formats.test_export import HAND, write_published


def test_scaled_copy_and_measure(tmp_path):
    run = write_published(tmp_path / "run", HAND)
    big = scaled_copy(run, tmp_path / "x3", 3)
    keys = [r["key"] for s in plan(data_files(big), 100) for r in rows(s, ["key"])]
    assert len(keys) == len(set(keys)) == 3 * 4
    assert json.loads((big / "stats.json").read_text())["qa_kept"] == 3 * 4
    assert main([str(run), "--scale", "2", "--out", str(tmp_path / "b"), "--formats", "wds"]) == 0
    report = json.loads((tmp_path / "b" / "export.json").read_text())["wds"]
    assert report["x1"]["images"] == 4 and report["x2"]["images"] == 8
    assert report["x1"]["peak_rss_mb"] > 0 and report["memory_ratio"] > 0
