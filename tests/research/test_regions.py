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
    assert "objects of one image overlap at most IoU 0.00" in out  # the two objects are apart
    # the rule whose smaller margin over the targets is largest
    assert "chosen: every box, 4 draws (precision / recall: 1.000 / 1.000; margin 0.090)" in out
    # two generators (the same draws twice), the near-duplicate grid: every rule is scored on both
    regions.main(
        ["score", str(tmp_path / "d.json"), str(tmp_path / "d.json"), "--n", "4", "--rank", "score,support"]
    )
    out = capsys.readouterr().out
    assert (
        out.count("support 2, words 0.5, rank support  4") == 2
        and "(precision / recall: 1.000 / 1.000; 1.000" in out
    )


def test_choose_the_largest_margin_on_every_generator():
    from research.regions import choose

    def r(p, rec):
        return {"precision": p, "recall": rec}

    rows = [
        ("a", 16, [r(0.95, 0.80), r(0.95, 0.90)]),  # recall short on one generator
        ("b", 32, [r(0.918, 0.876), r(0.93, 0.90)]),  # margin 0.006
        ("c", 32, [r(0.92, 0.90), r(0.93, 0.89)]),  # margin 0.01
        ("d", 64, [r(0.99, 0.99), r(0.96, 0.92)]),  # margin 0.05: more draws, chosen
        ("d", 48, [r(0.99, 0.99), r(0.96, 0.92)]),  # the same margin with fewer draws: this one
        ("e", 8, [r(None, 0.0), r(0.99, 0.99)]),  # no region on one generator
    ]
    assert choose(rows)[:2] == ("d", 48)
    assert choose(rows[:3])[:2] == ("c", 32)
    assert choose(rows[:1]) is None and choose(rows[-1:]) is None


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
