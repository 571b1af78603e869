"""What the data looks like, on any run (no truth): publish counts it per shard, merges it into stats.json
and shows it in the dataset card."""

import json
from collections import Counter

from jade.models.tasks import QUESTION_TYPES
from jade.pipeline.stats import sum_counts
from jade.reports.card import data_card
from jade.reports.stats import data_stats, shard_data_counts

ROWS = [
    {
        "qa": [
            {"question": "Is it red?", "answer": "Yes", "type": "yes/no"},
            {"question": "Is there a big blue square?", "answer": "no", "type": "yes/no"},
            {"question": "How many?", "answer": "two", "type": "number"},
        ],
        "regions": [{"caption": "a red circle"}, {"caption": "blue square"}],
    },
    {
        "qa": [
            {"question": "Is it?", "answer": "yes.", "type": "yes/no"},
            {"question": "What colour is the thing?", "answer": "Red", "type": "other"},
        ],
        "regions": [],
    },
]
REJECTED = [
    {"type": "yes/no", "reason": "answer mismatch", "answer": "yes"},
    {"type": "yes/no", "reason": "duplicate question", "answer": None},
    {"type": "number", "reason": "answer mismatch", "answer": "3"},
    {"type": "other", "reason": "low filter score", "answer": "blue"},
]
STATS = {  # what merge_stats gets from the filter's records
    "questions_generated": 9,
    "qa_kept": 5,
    "qa_rejected": 4,
    "regions_per_image": 1.0,
    "rejected_by_reason": {"answer mismatch": 2, "duplicate question": 1, "low filter score": 1},
    "by_type": {
        "yes/no": {"questions_generated": 5, "qa_kept": 3, "qa_rejected": 2, "keep_rate": 0.6},
        "number": {"questions_generated": 2, "qa_kept": 1, "qa_rejected": 1, "keep_rate": 0.5},
        "other": {"questions_generated": 2, "qa_kept": 1, "qa_rejected": 1, "keep_rate": 0.5},
    },
}


def _merged(*shards):
    return sum_counts(json.loads(json.dumps(counts)) for counts in shards)  # through JSON, as records are


def test_data_stats_by_hand():
    # Two shards, the second a copy of the first: every count doubles, every share stays.
    one = shard_data_counts(ROWS, REJECTED)
    d = data_stats(_merged(one), STATS)
    d2 = data_stats(_merged(one, one), STATS)
    yn, num, other = (d["by_type"][t] for t in QUESTION_TYPES)
    assert yn["yes_share_kept"] == 2 / 3  # "Yes", "yes." vs "no" after VQA normalization
    assert yn["yes_share_generated"] == 3 / 4  # + the rejected "yes" (the duplicate has no answer)
    assert yn["top_answers"] == [["yes", 2], ["no", 1]] and yn["answers_distinct"] == 2
    assert num["top_answers"] == [["2", 1]]  # "two" -> "2"
    assert other["top_answers"] == [["red", 1]]
    assert yn["rejected_by_reason"] == {"answer mismatch": 1, "duplicate question": 1}
    assert other["rejected_by_reason"] == {"low filter score": 1}
    assert yn["question_words"] == {"mean": 11 / 3, "median": 3.0, "max": 6}  # 3, 6 and 2 words
    assert d["question_words"] == {"mean": 18 / 5, "median": 3.0, "max": 6}  # + 2 and 5 words
    assert d["regions_per_image_hist"] == {"0": 1, "2": 1}
    assert d["region_caption_words"] == {"mean": 2.5, "median": 2.5, "max": 3}
    assert d["reject_rate_by_reason"] == {
        "answer mismatch": 2 / 9,
        "duplicate question": 1 / 9,
        "low filter score": 1 / 9,
    }
    assert d2["by_type"]["yes/no"]["top_answers"] == [["yes", 4], ["no", 2]]
    assert d2["by_type"]["yes/no"]["yes_share_kept"] == 2 / 3
    assert d2["regions_per_image_hist"] == {"0": 2, "2": 2}


def test_data_card_by_hand():
    stats = {**STATS, "keep_rate": 5 / 9}
    stats = {**stats, **data_stats(_merged(shard_data_counts(ROWS, REJECTED)), stats)}
    card = "\n".join(data_card(stats))
    assert "| yes/no | 5 | 3 | 60.0% | 1 | 1 | 0 |" in card  # answer mismatch, duplicate, low score
    assert "| all | 9 | 5 | 55.6% | 2 | 1 | 1 |" in card
    assert "yes (2), no (1)" in card
    assert '66.7% "yes" among kept yes/no pairs (75.0% among all answered' in card
    assert "images by number of regions: 0: 1, 2: 1" in card


def test_stats_of_a_run_add_up(fake_run):
    stats = json.loads((fake_run / "stats.json").read_text())
    for key in (
        "images_in",
        "images_ok",
        "images_failed",
        "questions_generated",
        "qa_kept",
        "qa_rejected",
        "keep_rate",
        "regions_generated",
        "regions_kept",
        "by_type",
    ):
        assert key in stats  # the contract keys (DESIGN.md section 7) stay
    by_reason = Counter()
    for b in stats["by_type"].values():
        by_reason.update(b["rejected_by_reason"])
        assert sum(b["rejected_by_reason"].values()) == b["qa_rejected"]
        assert sum(n for _, n in b["top_answers"]) <= b["qa_kept"]
    assert dict(by_reason) == stats["rejected_by_reason"]
    assert sum(stats["regions_per_image_hist"].values()) == stats["images_ok"]
    assert sum(int(k) * v for k, v in stats["regions_per_image_hist"].items()) == stats["regions_kept"]
    # The fake generator answers "Yes." and "yes": every kept yes/no answer is "yes"; "two" is "2".
    assert stats["by_type"]["yes/no"]["yes_share_kept"] == 1.0
    assert stats["by_type"]["number"]["top_answers"] == [["2", stats["by_type"]["number"]["qa_kept"]]]
    card = (fake_run / "dataset" / "README.md").read_text()
    assert "## Data statistics" in card and '100.0% "yes" among kept yes/no pairs' in card
