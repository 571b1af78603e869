"""`python -m research.regions score`: the rules scored on draws against VG truth by `jade eval`'s test."""

import json

import pytest

pytestmark = pytest.mark.research


def _obj(name, x, y, w, h, color, size):
    return {"name": name, "x": x, "y": y, "w": w, "h": h, "attributes": [color, size], "relations": []}


def test_score_rule_counts_by_hand(tmp_path, capsys):
    from research import regions

    truth = {
        "1": {
            "width": 100,
            "height": 100,
            "objects": {
                "a": _obj("circle", 0, 0, 40, 40, "red", "large"),
                "b": _obj("square", 60, 60, 40, 40, "blue", "large"),
            },
        }
    }
    red = "<loc0000><loc0000><loc0409><loc0409> a red circle"
    blue = "<loc0614><loc0614><loc1023><loc1023> a blue square"
    draws = {"1": [[red, 0.9], [red, 0.8], [blue, 0.7], ["garbage", 0.1]]}
    every = regions.score_rule(draws, truth, 4, regions.RegionRule())
    assert every["recall"] == 1.0 and every["precision"] == 1.0 and every["regions_per_image"] == 2
    # the blue square is a lone draw: the rule before drops it
    before = regions.score_rule(draws, truth, 4, regions.BEFORE)
    assert before["recall"] == 0.5 and before["precision"] == 1.0 and before["recall_by_objects"] == {2: 0.5}
    assert regions.score_rule(draws, truth, 1, regions.RegionRule())["recall"] == 0.5  # the first draw only
    world = tmp_path / "w"
    (world / "truth").mkdir(parents=True)
    (world / "truth" / "vg_scene_graphs.json").write_text(json.dumps(truth))
    (tmp_path / "d.json").write_text(json.dumps({"world": str(world), "n": 4, "draws": draws}))
    regions.main(["score", str(tmp_path / "d.json"), "--n", "2,4", "--md", "--support", "2,3"])
    out = capsys.readouterr().out
    assert "| support 1, words 0.5 (before) | 4 | 1.000 | 0.500 |" in out
    assert "| support 3, words 0.5 | 4 | n/a | 0.000 |" in out
    # the fewest draws where a rule clears both margins, then the rule with the larger smaller margin
    assert out.strip().endswith("chosen: every box, 4 draws")


def test_choose_fewest_draws_then_the_safer_rule():
    from research.regions import choose

    def r(p, rec):
        return {"precision": p, "recall": rec}

    rows = [
        ("a", 16, r(0.95, 0.80)),  # recall short
        ("b", 32, r(0.918, 0.876)),
        ("c", 32, r(0.92, 0.90)),
        ("d", 48, r(0.99, 0.99)),  # more draws: not chosen
        ("e", 8, r(None, 0.0)),
    ]
    assert choose(rows)[:2] == ("c", 32)
    assert choose(rows[:1]) is None


def test_generated_scores_as_jade_eval_does(fake_run, tmp_path):
    """`generated` on a finished run: the regions of _work/generate/ score as `jade eval` scores the published
    ones (the same regions, the same truth)."""
    import shutil

    from jade.reports.evaluate import evaluate_run
    from research.regions import generated

    run = shutil.copytree(fake_run, tmp_path / "run")
    want = evaluate_run(run)
    got = generated(str(run))
    assert want["regions_per_image"] > 0 and got["images"] == want["images"]
    for k in (
        "region_precision",
        "region_recall",
        "objects_true",
        "objects_found",
        "region_recall_by_objects",
    ):
        assert got[k] == want[k], k
