"""Stage plumbing with deterministic fake backends (the subject here is bookkeeping, not the models):
kept pairs agree, mismatches and duplicates are rejected with their reasons, and everything adds up."""

import json

import pyarrow.parquet as pq
import pytest

from jade.models.backends.fake import FakeBackend
from jade.pipeline.executor import LocalExecutor
from jade.pipeline.runner import run_manifest
from tests.tiny import TINY

QUESTIONS = {
    "question yes/no": ["Is there a red circle?", "Is there a blue square?"],
    "question number": ["How many circles are there?"],
    "question other": ["What color is the circle?", "What shape is the red object?", "Where is the red circle?"],
    "dense caption": ["<loc0100><loc0100><loc0400><loc0400> a red circle", "<loc0110><loc0100><loc0400><loc0400> red circle",
                      "<loc0600><loc0600><loc0900><loc0900> a blue square", "no box here"],
}  # fmt: skip
GEN_ANSWERS = {"answer en Is there a red circle?": "Yes.", "answer en How many circles are there?": "two",
               "answer en What color is the circle?": "red", "answer en Where is the red circle?": "top left"}  # fmt: skip
FILTER_ANSWERS = {"answer en Is there a red circle?": "yes", "answer en How many circles are there?": "2",
                  "answer en What color is the circle?": "blue", "answer en Where is the red circle?": "the top left"}  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    mp = pytest.MonkeyPatch()

    def fake(name, model_dir, *args, **kwargs):
        if model_dir.endswith("generator"):
            return FakeBackend(answers=GEN_ANSWERS, pool=QUESTIONS)
        return FakeBackend(answers=FILTER_ANSWERS)

    mp.setattr("jade.stages.generate.make_backend", fake)
    mp.setattr("jade.stages.filter.make_backend", fake)
    out = tmp_path_factory.mktemp("fake") / "run"
    run_manifest("sample", str(out), TINY, executor=LocalExecutor())
    mp.undo()
    return out


def test_filter_reasons_and_counts(run_dir):
    stats = json.loads((run_dir / "stats.json").read_text())
    rejected = pq.read_table(sorted((run_dir / "rejected").glob("*.parquet"))).to_pylist()
    kept = [
        qa
        for f in sorted((run_dir / "dataset/data").glob("*.parquet"))
        for r in pq.read_table(f).to_pylist()
        for qa in r["qa"]
    ]
    assert stats["qa_kept"] == len(kept) > 0
    assert stats["qa_rejected"] == len(rejected) > 0
    assert stats["questions_generated"] == len(kept) + len(rejected)
    reasons = {r["reason"] for r in rejected}
    assert "duplicate question" in reasons and "answer mismatch" in reasons
    # "Is there a blue square?" -> generator "yes" (default) vs filter "yes" (default): kept.
    # "What color is the circle?" -> red vs blue: rejected. "Two" vs "2" and "top left" vs "the top left": kept.
    by_q = {q["question"]: q for q in kept}
    assert by_q["How many circles are there?"]["filter_answer"] == "2"
    assert by_q["Where is the red circle?"]["answer"] == "top left"
    assert "What color is the circle?" not in by_q
    assert any(
        r["question"] == "What color is the circle?" and r["filter_answer"] == "blue" for r in rejected
    )
    assert stats["rejected_by_reason"]["duplicate question"] == sum(
        r["reason"] == "duplicate question" for r in rejected
    )


def test_regions_parsed_and_deduplicated(run_dir):
    stats = json.loads((run_dir / "stats.json").read_text())
    rows = [
        r for f in sorted((run_dir / "dataset/data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()
    ]
    for r in rows:
        boxes = [tuple(x["bbox"]) for x in r["regions"]]
        assert len(boxes) == len(set(boxes))
        assert len(r["regions"]) <= 2  # the two red-circle boxes overlap: one is dropped
    assert (
        stats["regions_generated"]
        == stats["regions_kept"] + stats["regions_malformed"] + stats["regions_duplicate"]
    )
