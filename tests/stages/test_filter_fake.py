"""Stage plumbing with deterministic fake backends (the subject here is bookkeeping, not the models):
kept pairs agree, mismatches and duplicates are rejected with their reasons, and everything adds up."""

import json

import pyarrow.parquet as pq
import pytest


@pytest.fixture(scope="module")
def run_dir(fake_run):
    return fake_run


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
    ill = [
        r
        for r in rejected
        if r["question"] == "What size is the green triangle?" and r["reason"] != "duplicate question"
    ]
    assert ill and all(
        r["reason"] == "no such object" and r["check"] == "How many green triangles are there? 0" for r in ill
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
        == stats["regions_kept"]
        + stats["regions_malformed"]
        + stats["regions_duplicate"]
        + stats["regions_unsupported"]
    )
