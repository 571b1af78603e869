"""`jade eval` on hand-made cases whose every number is counted by hand: a wrong metric fails here."""

import json
import shutil

import pytest

from jade.pipeline.rundir import RunDir
from jade.reports.evaluate import evaluate_run, score

CONTRACT = [
    "qa_precision_all",
    "qa_precision_kept",
    "qa_precision_kept_strict",
    "qa_precision_rejected",
    "qa_unverifiable",
    "qa_unparseable",
    "qa_ill_posed",
    "keep_rate",
    "kept_per_image",
    "region_precision",
    "region_recall",
    "region_recall_by_objects",
    "distinct_question_ratio",
    "by_type",
]


def _obj(name, x, y, w, h, *attrs):
    return {"name": name, "x": x, "y": y, "w": w, "h": h, "attributes": list(attrs), "relations": []}


TRUTH = {
    "a": {
        "width": 100,
        "height": 100,
        "objects": {
            "1": _obj("circle", 0, 0, 40, 40, "red", "large", "top left"),
            "2": _obj("square", 70, 70, 30, 30, "blue", "small", "bottom right"),
        },
    },
    "b": {
        "width": 100,
        "height": 100,
        "objects": {
            "3": _obj("triangle", 0, 0, 20, 20, "green", "small", "top left"),
            "4": _obj("triangle", 50, 50, 20, 20, "green", "small", "middle"),
        },
    },
}


def _qa(q, a, t):
    return {"question": q, "answer": a, "type": t}


ROWS = [
    {
        "key": "a",
        "qa": [
            _qa("Is there a red circle?", "Yes", "yes/no"),  # right
            _qa("How many squares are there?", "2", "number"),  # wrong (1)
            _qa("What color is the circle?", "red", "other"),  # right
            _qa("What is the meaning of life?", "42", "other"),
        ],  # unverifiable: not in the language
        "regions": [
            {"bbox": [0.0, 0.0, 0.4, 0.4], "caption": "a large red circle in the top left"},  # right
            {"bbox": [0.0, 0.0, 0.4, 0.4], "caption": "a blue circle"},  # wrong colour
            {"bbox": [0.5, 0.5, 0.6, 0.6], "caption": "a small blue square"},  # IoU < 0.5
            {"bbox": [0.68, 0.68, 1.0, 1.0], "caption": "blue square at the bottom"},
        ],
    },  # IoU 0.88: right
    {
        "key": "b",
        "qa": [
            _qa("How many triangles are there?", "two", "number"),  # right ("two" -> "2")
            _qa("Is the triangle green?", "yes", "yes/no"),
        ],  # unverifiable: two triangles, ill-posed
        "regions": [],
    },
]
REJECTED = [
    {"key": "a", **_qa("Is there a blue square?", "no", "yes/no"), "reason": "answer mismatch"},  # wrong
    {
        "key": "a",
        **_qa("Is there a blue square?", None, "yes/no"),
        "reason": "duplicate question",
    },  # not checked
    {"key": "a", **_qa("", None, "other"), "reason": "empty question"},  # unverifiable
    {
        "key": "b",
        **_qa("How many green objects are there?", "2", "number"),
        "reason": "low filter score",
    },  # right
    {
        "key": "b",
        **_qa("What size is the circle?", "small", "other"),
        "reason": "answer mismatch",
    },  # no circle
    {"key": "b", **_qa("Is there a red circle?", "yes", "yes/no"), "reason": "answer mismatch"},  # wrong
]


def test_scores_by_hand():
    r = score(TRUTH, ROWS, REJECTED)
    assert r["pairs_checked"] == {
        "all": {"right": 4, "wrong": 3, "unparseable": 2, "ill-posed": 2},
        "kept": {"right": 3, "wrong": 1, "unparseable": 1, "ill-posed": 1},
        "rejected": {"right": 1, "wrong": 2, "unparseable": 1, "ill-posed": 1},
    }
    assert r["qa_precision_kept_strict"] == pytest.approx(
        3 / 6
    )  # the two unverifiable kept pairs count as wrong
    assert r["qa_unparseable"] == pytest.approx(2 / 11) and r["qa_ill_posed"] == pytest.approx(2 / 11)
    assert r["qa_ill_posed_kept"] == pytest.approx(1 / 6)
    assert r["qa_precision_all"] == pytest.approx(4 / 7)
    assert r["qa_precision_kept"] == pytest.approx(3 / 4)
    assert r["qa_precision_rejected"] == pytest.approx(1 / 3)
    assert r["qa_unverifiable"] == pytest.approx(4 / 11)
    assert r["keep_rate"] == pytest.approx(6 / 12)  # the duplicate is a generated question
    assert r["kept_per_image"] == pytest.approx(3.0)
    assert r["questions_per_image"] == pytest.approx(6.0)
    assert r["distinct_question_ratio"] == pytest.approx(11 / 12)  # one repeat within image a
    assert r["distinct_question_ratio_run"] == pytest.approx(10 / 12)  # + "Is there a red circle?" in a and b
    assert r["duplicates_not_checked"] == 1
    assert r["region_precision"] == pytest.approx(2 / 4)
    assert r["regions_per_image"] == pytest.approx(2.0)


def test_region_recall_by_hand():
    """Recall is precision's test seen from the truth: a true object is found when some kept region's box
    overlaps it at IoU >= 0.5 and the caption names its colour and shape; counted by objects in the scene."""
    truth = {
        **TRUTH,
        "c": {"width": 100, "height": 100, "objects": {"5": _obj("square", 10, 10, 50, 50, "red", "large")}},
        "d": {"width": 100, "height": 100, "objects": {"6": _obj("circle", 10, 10, 50, 50, "blue", "large")}},
    }
    rows = ROWS + [
        # a right box with the wrong colour, and a right caption on a box that misses: not found
        {"key": "c", "qa": [], "regions": [{"bbox": [0.1, 0.1, 0.6, 0.6], "caption": "a blue square"}]},
        {"key": "d", "qa": [], "regions": [{"bbox": [0.1, 0.1, 0.6, 0.6], "caption": "a blue circle"}] * 2},
    ]
    r = score(truth, rows, [])
    # a: both objects (the red circle by its first region, the blue square by its last); b: no regions;
    # c: none; d: one object, found twice (counted once)
    assert (r["objects_true"], r["objects_found"]) == (6, 3)
    assert r["region_recall"] == pytest.approx(3 / 6)
    assert r["region_recall_by_objects"] == {
        "1": {"images": 2, "objects": 2, "found": 1, "recall": 0.5},
        "2": {"images": 2, "objects": 4, "found": 2, "recall": 0.5},
    }
    assert r["region_precision"] == pytest.approx(4 / 7)
    assert score(TRUTH, ROWS, REJECTED)["region_recall"] == pytest.approx(2 / 4)


def test_check_rejections_by_hand():
    """Pairs rejected by a presupposition check: did the presupposition hold in the image (the filter's
    mistake), fail (a right rejection), or name nothing the world knows?"""

    def rej(key, q, check, reason="not one object"):
        return {"key": key, **_qa(q, "yes", "yes/no"), "reason": reason, "check": check}

    rejected = [
        rej("a", "Is the red circle large?", "How many red circles are there? 2"),  # one red circle: held
        rej("b", "Is the green triangle small?", "How many green triangles are there? 2"),  # two: failed
        rej("a", "Is the blue square small?", "Is there a blue square? no", "no such object"),  # held
        rej("a", "Is the green square small?", "Is there a green square? no", "no such object"),  # failed
        rej("b", "Is the flurb small?", "How many flurbs are there? 0", "no such object"),  # unverifiable
        rej("a", "Is the circle red?", None, "answer mismatch"),  # no check: not counted
    ]
    r = score(TRUTH, ROWS, rejected)
    assert r["check_rejections"] == {"held": 2, "failed": 2, "unverifiable": 1}
    assert score(TRUTH, ROWS, REJECTED)["check_rejections"] == {"held": 0, "failed": 0, "unverifiable": 0}


def test_scores_by_type_by_hand():
    b = score(TRUTH, ROWS, REJECTED)["by_type"]
    yn, num, other = b["yes/no"], b["number"], b["other"]
    assert yn["questions_generated"] == 5 and yn["qa_kept"] == 2
    assert yn["keep_rate"] == pytest.approx(0.4)
    assert yn["qa_precision_kept"] == 1.0 and yn["qa_precision_rejected"] == 0.0
    assert yn["qa_precision_all"] == pytest.approx(1 / 3)
    assert yn["qa_unverifiable"] == pytest.approx(1 / 4)
    assert yn["kept_per_image"] == 1.0 and yn["questions_per_image"] == 2.5
    assert yn["distinct_question_ratio"] == pytest.approx(4 / 5)
    assert yn["distinct_question_ratio_run"] == pytest.approx(3 / 5)
    assert num["keep_rate"] == pytest.approx(2 / 3) and num["qa_unverifiable"] == 0.0
    assert (num["qa_precision_kept"], num["qa_precision_rejected"]) == (0.5, 1.0)
    assert num["qa_precision_all"] == pytest.approx(2 / 3)
    assert other["keep_rate"] == 0.5 and other["qa_unverifiable"] == pytest.approx(3 / 4)
    assert other["qa_precision_kept"] == 1.0 and other["qa_precision_rejected"] is None  # nothing verifiable


def test_eval_of_a_run_writes_the_contract(fake_run, tmp_path):
    run = tmp_path / "run"
    for part in ("dataset", "rejected", "world/truth"):
        shutil.copytree(fake_run / part, run / part)
    shutil.copy(fake_run / "stats.json", run / "stats.json")
    report = evaluate_run(run)
    saved = json.loads((run / "eval.json").read_text())
    assert all(k in saved for k in CONTRACT) and saved == json.loads(json.dumps(report))
    # a type-conditioned run: none of the region-conditioned keys (tests/reports/test_eval_regions.py)
    assert not {"region_pairs_kept", "region_grounded_kept", "by_jade_type"} & set(saved)
    assert set(saved["by_type"]) == {"yes/no", "number", "other"}
    stats = json.loads((run / "stats.json").read_text())
    assert saved["keep_rate"] == pytest.approx(
        stats["keep_rate"]
    )  # counted from the data, agrees with publish
    assert saved["kept_per_image"] == pytest.approx(stats["kept_per_image"])
    for t, b in saved["by_type"].items():
        assert b["keep_rate"] == pytest.approx(stats["by_type"][t]["keep_rate"])
    for v in (saved["qa_precision_all"], saved["qa_unverifiable"], saved["region_precision"]):
        assert v is None or 0.0 <= v <= 1.0
    assert "| yes/no |" in (run / "eval.md").read_text()


def testaccuracy_summary_by_type_and_template():
    from jade.reports.evaluate import accuracy_summary

    s = accuracy_summary(
        {
            "all": [True, False, True, True],
            "type.yes/no": [True, False],
            "type.other": [True, True],
            "template.exist_s": [True, False],
        }
    )
    assert s == {
        "all": 0.75,
        "questions": 4,
        "by_type": {"other": 1.0, "yes/no": 0.5},
        "by_template": {"exist_s": 0.5},
    }


def test_model_accuracy_needs_the_held_out_images(tmp_path):
    from jade.reports.evaluate import model_accuracy

    assert model_accuracy(RunDir(tmp_path)) is None  # no world: nothing to ask, no crash
