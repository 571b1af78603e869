"""`python -m bench.recipes`: a world and its examples are prepared, recipes train side by side in their own
processes and are scored at the steps asked for, and the table reads the results."""

import json

import pytest

from research import recipes

pytestmark = pytest.mark.research


def test_recipe_sweep_scores_each_recipe_at_its_steps(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(recipes.GRIDS.parent.parent)  # the recipes run as `python -m bench.recipes`
    recipes.prep(tmp_path, "w0", vg=4, gqa=4, vqa=12, val=3)
    assert (tmp_path / "w0" / "filter.parquet").exists() and (tmp_path / "w0" / "proc_generator").is_dir()
    specs = {
        "f": {"steps": 3, "bs": 4, "evals": [2]},
        "g": {"steps": 2, "bs": 4, "role": "generator", "sched": "linear", "arch": {"text_layers": 1}},
    }
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(specs))
    out = tmp_path / "out" / "results.json"
    assert (
        recipes.main(["sweep", str(tmp_path), "--grid", str(grid), "--out", str(out), "--parallel", "2"]) == 0
    )
    results = json.loads(out.read_text())
    assert sorted(results) == ["f", "g"]
    assert sorted(results["f"]["evals"], key=int) == ["2", "3"] and list(results["g"]["evals"]) == ["2"]
    scored = results["f"]["evals"]["3"]
    assert scored["questions"] == len(recipes_probe(tmp_path)) > 0
    assert 0.0 <= scored["all"] <= 1.0 and set(scored["by_type"]) <= {"yes/no", "number", "other"}
    table = capsys.readouterr().out
    assert "| f | 3 |" in table and "| g | 2 |" in table


def test_grids_name_known_settings():
    known = {"steps", "bs", "lr", "warmup", "wd", "sched", "seed", "role", "world", "arch", "evals", "tasks"}
    for grid in json.loads(recipes.GRIDS.read_text()).values():
        for spec in grid.values():
            assert set(spec) <= known and spec.get("world", "w0") in recipes.WORLDS


def recipes_probe(root):
    from jade.reports.evaluate import probe_items

    return probe_items(root / "w0" / "world")
