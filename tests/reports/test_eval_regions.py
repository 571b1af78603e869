"""`jade eval` on region-conditioned pairs (`generate.condition: region`), counted by hand: each pair is checked
against its region's true object (best box overlap at IoU >= 0.5), and every number is also given per JADE
question type; a run without region pairs gets exactly the report it always got."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jade.formats.dataset import features
from jade.formats.run_tables import REJECTED
from jade.reports.evaluate import evaluate_run, markdown, region_object, region_verdict, score
from jade.sampleworld.language import question_referents


def _obj(name, x, y, w, h, *attrs):
    return {"name": name, "x": x, "y": y, "w": w, "h": h, "attributes": list(attrs), "relations": []}


TRUTH = {
    "r": {
        "width": 100,
        "height": 100,
        "objects": {
            "1": _obj("circle", 0, 0, 40, 40, "red", "large", "top left"),
            "2": _obj("square", 60, 60, 40, 40, "blue", "small", "bottom right"),
            "3": _obj("square", 60, 0, 30, 30, "red", "small", "top right"),
        },
    }
}
CIRCLE, BLUE_SQ, RED_SQ = [0.0, 0.0, 0.4, 0.4], [0.6, 0.6, 1.0, 1.0], [0.6, 0.0, 0.9, 0.3]
NOWHERE = [0.2, 0.2, 0.5, 0.5]  # IoU 0.19 with the circle, 0 with the rest


def _qa(q, a, t, jt, bbox, caption="a region"):
    return {
        "question": q,
        "answer": a,
        "type": t,
        "jade_type": jt,
        "region": {"bbox": bbox, "caption": caption},
    }


KEPT = [
    _qa("What color is the circle?", "red", "other", "what", CIRCLE),  # about, right
    _qa("Is there a blue square?", "yes", "yes/no", "binary", CIRCLE),  # elsewhere, right
    _qa("How many red objects are there?", "2", "number", "how", RED_SQ),  # about (names 1 and 3), right
    _qa("Is the red circle above the blue square?", "no", "yes/no", "binary", BLUE_SQ),  # subject: elsewhere
    _qa("What is the meaning of life?", "42", "other", "what", BLUE_SQ),  # unparseable
    _qa("What shape is the blue object?", "circle", "other", "what", NOWHERE),  # unmatched, wrong
]
ROWS = [{"key": "r", "qa": KEPT, "regions": []}]
REJ = [
    {
        "key": "r",
        **_qa("Where is the blue square?", "top left", "other", "where", BLUE_SQ),
        "reason": "answer mismatch",
    },
    {
        "key": "r",
        **_qa("Is the circle red?", "yes", "yes/no", "binary", RED_SQ),
        "reason": "low filter score",
    },
    {
        "key": "r",
        **_qa("Is the circle red?", None, "yes/no", "binary", RED_SQ),
        "reason": "duplicate question",
    },
]


def test_question_referents():
    g = TRUTH["r"]
    assert question_referents("What color is the circle?", g) == ["1"]
    assert question_referents("How many red objects are there?", g) == ["1", "3"]
    assert question_referents("Is the red circle above the blue square?", g) == ["1"]  # the subject
    assert question_referents("Are there any squares?", g) == ["2", "3"]
    assert question_referents("Is there a green triangle?", g) == []
    assert question_referents("What is the meaning of life?", g) is None


def test_region_object_best_overlap_at_half():
    g = TRUTH["r"]
    assert region_object(CIRCLE, g) == "1" and region_object(BLUE_SQ, g) == "2"
    assert region_object(NOWHERE, g) is None and region_object(CIRCLE, None) is None
    assert region_object([0.0, 0.0, 0.4, 0.4], g) == "1"
    # two candidates: the better overlap wins, whichever comes first
    two = {
        "width": 10,
        "height": 10,
        "objects": {"a": _obj("circle", 0, 0, 6, 6), "b": _obj("circle", 0, 0, 5, 5)},
    }
    assert region_object([0.0, 0.0, 0.5, 0.5], two) == "b" and region_object([0.0, 0.0, 0.6, 0.6], two) == "a"
    assert region_verdict("Is there a red square?", {"bbox": RED_SQ, "caption": ""}, g) == "about"


def test_region_pairs_by_hand():
    r = score(TRUTH, ROWS, REJ)
    assert r["region_pairs_kept"] == 6 and r["region_pairs_rejected"] == 2  # the duplicate is not checked
    assert r["region_pairs_checked"] == {
        "kept": {"about": 2, "elsewhere": 2, "unmatched": 1, "unparseable": 1},
        "rejected": {"about": 1, "elsewhere": 1, "unmatched": 0, "unparseable": 0},
    }
    assert r["region_grounded_kept"] == pytest.approx(2 / 6) and r["region_grounded_rejected"] == 0.5
    b = r["by_jade_type"]
    assert list(b) == ["what", "how", "where", "who", "why", "when", "binary"]
    assert (b["what"]["qa_kept"], b["what"]["qa_precision_kept"]) == (3, 0.5)
    assert b["what"]["qa_precision_kept_strict"] == pytest.approx(1 / 3)
    assert b["what"]["region_grounded_kept"] == pytest.approx(1 / 3) and b["what"]["region_pairs_kept"] == 3
    assert (b["how"]["qa_kept"], b["how"]["qa_precision_kept"], b["how"]["region_grounded_kept"]) == (
        1,
        1.0,
        1.0,
    )
    assert b["binary"]["questions_generated"] == 4 and b["binary"]["keep_rate"] == 0.5
    assert b["binary"]["qa_precision_kept"] == 1.0 and b["binary"]["region_grounded_kept"] == 0.0
    assert b["binary"]["region_grounded_rejected"] == 0.0  # "the circle" asked about the red square
    assert (b["where"]["qa_kept"], b["where"]["qa_precision_rejected"]) == (0, 0.0)
    assert b["where"]["region_grounded_kept"] is None and b["where"]["region_grounded_rejected"] == 1.0
    assert b["who"]["questions_generated"] == 0 and b["who"]["qa_precision_kept"] is None
    # the answer-type numbers are the ones any run gets
    assert r["pairs_checked"]["kept"] == {"right": 4, "wrong": 1, "unparseable": 1}
    md = markdown(r)
    assert "## Region-conditioned pairs" in md and "| binary | 2 | 1.000 | 1.000 | 0.000 | 0.500 |" in md


OLD_KEYS = {
    "qa_precision_all",
    "qa_precision_kept",
    "qa_precision_kept_strict",
    "qa_precision_rejected",
    "qa_unverifiable",
    "qa_unparseable",
    "qa_ill_posed",
    "qa_ill_posed_kept",
    "keep_rate",
    "kept_per_image",
    "questions_per_image",
    "distinct_question_ratio",
    "distinct_question_ratio_run",
    "questions_generated",
    "qa_kept",
    "duplicates_not_checked",
    "pairs_checked",
    "images",
    "region_precision",
    "regions_per_image",
    "region_recall",
    "objects_true",
    "objects_found",
    "region_recall_by_objects",
    "by_type",
    "check_rejections",
}


def test_type_conditioned_report_is_unchanged():
    """Pairs without a region (no fields, or null ones as rejected/ now records them) add no key and change
    no number."""
    plain = [{**q, "region": None, "jade_type": None} for q in KEPT]
    bare = [{k: v for k, v in q.items() if k not in ("region", "jade_type")} for q in KEPT]
    rej = [{**q, "region": None, "jade_type": None} for q in REJ]
    r = score(TRUTH, [{"key": "r", "qa": plain, "regions": []}], rej)
    assert set(r) == OLD_KEYS
    assert r == score(
        TRUTH,
        [{"key": "r", "qa": bare, "regions": []}],
        [{k: v for k, v in q.items() if k not in ("region", "jade_type")} for q in REJ],
    )
    assert "Region-conditioned" not in markdown(r)
    with_regions = score(TRUTH, ROWS, REJ)
    assert {k: v for k, v in with_regions.items() if k in OLD_KEYS} == r


def test_eval_of_a_region_run(tmp_path):
    """The files of a region-conditioned run, as publish and the filter write them: eval.json and eval.md
    carry the region numbers."""
    run = tmp_path / "run"
    (run / "world/truth").mkdir(parents=True)
    (run / "world/truth/cc3m_scene_graphs.json").write_text(json.dumps({"src-r": TRUTH["r"]}))
    prov = {k: "x" for k in ("generator", "filter", "config", "source_shard", "generator_attention")}
    row = {
        "key": "r",
        "url": None,
        "caption": "",
        "width": 100,
        "height": 100,
        "qa": [{**q, "filter_answer": q["answer"], "score": 0.9} for q in KEPT],
        "regions": [],
        "provenance": {**prov, "seed": 0, "source_key": "src-r", "filter_attention": "image"},
    }
    data = run / "dataset/data/train-a-00000-of-00001.parquet"
    data.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([row], schema=features(False, region=True).arrow_schema), data)
    (run / "rejected").mkdir()
    rej = [{**{f.name: None for f in REJECTED}, "key": "r", "shard": "a", **q} for q in REJ]
    pq.write_table(pa.Table.from_pylist(rej, schema=REJECTED), run / "rejected/a.parquet")
    report = evaluate_run(run)
    saved = json.loads((run / "eval.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["region_pairs_checked"] == score(TRUTH, ROWS, REJ)["region_pairs_checked"]
    assert saved["by_jade_type"]["where"]["region_grounded_rejected"] == 1.0
    assert "about its region (kept)" in (run / "eval.md").read_text()


def test_truth_boxes_are_written_as_regions_are():
    from jade.reports.evaluate import truth_boxes

    graph = {"width": 100, "height": 50, "objects": {"1": {"x": 10, "y": 5, "w": 20, "h": 25}}}
    assert truth_boxes(graph) == [(0.1, 0.1, 0.3, 0.6)]
