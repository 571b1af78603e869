"""`python -m research.recipes`: a world and its examples are prepared, recipes train side by side in their
own processes and are scored at the steps asked for, the table reads the results and their summary, and the
committed grids and summary stay readable."""

import json
from dataclasses import fields

import pyarrow.parquet as pq
import pytest

from jade.models.attention import RULES
from jade.models.specs import Architecture
from research import recipes

pytestmark = pytest.mark.research

KNOWN = {
    "steps",
    "bs",
    "lr",
    "warmup",
    "wd",
    "sched",
    "seed",
    "role",
    "world",
    "arch",
    "attention",
    "tasks",
    "evals",
}
SUMMARY = recipes.REPO / "research" / "results" / "recipes-h200-2026-11-23.md"


def test_recipe_sweep_scores_each_recipe_at_its_steps(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the sweep starts its recipes from the repository root itself
    recipes.prep(tmp_path, "w0", vg=4, gqa=4, vqa=12, val=3)
    assert (tmp_path / "w0" / "filter.parquet").exists() and (tmp_path / "w0" / "proc_generator").is_dir()
    specs = {
        "f": {"steps": 3, "bs": 4, "evals": [2]},
        "g": {
            "steps": 2,
            "bs": 4,
            "role": "generator",
            "sched": "linear",
            "arch": {"text_layers": 1},
            "attention": "image",
            "tasks": ["answer"],
        },
    }
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(specs))
    out = tmp_path / "out" / "results.json"
    args = ["sweep", str(tmp_path), "--grid", str(grid), "--out", str(out), "--parallel", "2"]
    assert recipes.main(args) == 0
    results = json.loads(out.read_text())
    assert sorted(results) == ["f", "g"]
    assert sorted(results["f"]["evals"], key=int) == ["2", "3"] and list(results["g"]["evals"]) == ["2"]
    scored = results["f"]["evals"]["3"]
    assert scored["questions"] == len(recipes_probe(tmp_path)) > 0
    assert 0.0 <= scored["all"] <= 1.0 and set(scored["by_type"]) <= {"yes/no", "number", "other"}
    generator = pq.read_table(tmp_path / "w0" / "generator.parquet", columns=["task"]).column("task")
    assert results["g"]["examples"] == generator.to_pylist().count("answer") > 0  # "tasks": answers only
    table = capsys.readouterr().out
    assert "| f | 3 |" in table and "| g | 2 |" in table

    assert recipes.main(["table", str(out), "--summary"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| ")][1:]
    firsts = [["| f", "grid.json", "filter"], ["| g", "grid.json", "generator"]]
    assert [r.split(" | ")[:3] for r in rows] == firsts
    assert "| bs 4 | " in rows[0] and " | 3 | 0k | " in rows[0] and " | 2 | 0k | " in rows[1]
    assert "bs 4, sched linear, attention image, tasks answer, text_layers 1 |" in rows[1]


def test_summary_has_a_row_per_recipe_with_its_last_step_and_curve():
    def scored(acc):
        return {"all": acc, "by_type": {"other": 0.4}, "by_template": {"query_color": 0.3}, "loss": 0.25}

    raw = {
        "r": {
            "spec": {"steps": 20, "bs": 64, "evals": [10]},
            "params": 2e6,
            "device": "cpu",
            "evals": {"20": scored(0.5), "10": scored(0.4)},
        },
        "s": {
            "spec": {"steps": 40, "role": "generator"},
            "params": 1e6,
            "device": "gpu",
            "evals": {"16": scored(0.6)},
        },
    }
    text = recipes.summary(raw)
    assert "- cpu: 1 recipe" in text and "- gpu: 1 recipe" in text
    rows = [r for r in text.splitlines() if r.startswith("| ")][1:]
    cells = "0.50 | 0.30" + " | " * 5 + " | 0.250"  # all, the templates (scored on one), loss
    assert rows[0] == f"| r |  | filter | bs 64 | 2.00 M | 20 | 1k | {cells} | 0k 0.40, 1k 0.50 |"
    assert rows[1].startswith("| s |  | generator | defaults | 1.00 M | 16 of 40 | 0k | 0.60 |")


def test_committed_summary_is_small_and_has_every_recipe():
    text = SUMMARY.read_text()
    assert len(text.encode()) < 12_000
    grids = json.loads(recipes.GRIDS.read_text())
    names = {r.split(" | ")[0][2:] for r in text.splitlines() if r.startswith("| ")} - {"recipe"}
    assert names == {n for grid in grids.values() for n in grid}
    assert "| F8k_b64_s2 | seeds | filter | bs 64, seed 2 | 2.03 M | 8000 | 512k | 0.90 |" in text


def test_grids_name_known_settings():
    arch_fields = {f.name for f in fields(Architecture)}
    for grid in json.loads(recipes.GRIDS.read_text()).values():
        for spec in grid.values():
            assert set(spec) <= KNOWN and spec.get("world", "w0") in recipes.WORLDS
            assert set(spec.get("arch", {})) <= arch_fields and spec.get("attention", "prefix") in RULES


def recipes_probe(root):
    from jade.reports.evaluate import probe_items

    return probe_items(root / "w0" / "world")
