"""The filter's rule, directly (datatrove tests its filters the same way): a pure function from a generated pair
and both models' answers to kept, or rejected with the reason, and the counts of a shard."""

import pytest

from jade.formats.run_tables import Rejection
from jade.stages.filter import FilterRule, apply_rule, verdict

CIRCLE = [
    {"question": "Is there a red circle?", "expect": "yes", "answer": "yes"},
    {"question": "How many red circles are there?", "expect": "1", "answer": "1"},
]


def pair(question="What color is the red circle?", answer="red", filter_answer="red", **kw):
    p = {
        "key": "k",
        "question": question,
        "type": "other",
        "answer": answer,
        "status": "ok",
        "question_score": 0.5,
        "answer_score": 0.9,
        "filter_answer": filter_answer,
        "filter_score": 0.8,
        "checks": CIRCLE,
    }
    return {**p, **kw}


@pytest.mark.parametrize(
    "p, rule, expected",
    [
        (pair(), FilterRule(), (None, None)),
        (pair(answer="Red.", filter_answer="red"), FilterRule(), (None, None)),  # VQA normalization
        (
            pair(answer="Red.", filter_answer="red"),
            FilterRule(normalization="none"),
            ("answer mismatch", None),
        ),
        (pair(answer="two", filter_answer="2", type="number"), FilterRule(), (None, None)),
        (pair(filter_answer="blue"), FilterRule(), ("answer mismatch", None)),
        (pair(filter_answer=None), FilterRule(), ("answer mismatch", None)),
        (pair(answer=""), FilterRule(), ("empty answer", None)),
        (pair(status="duplicate question"), FilterRule(), ("duplicate question", None)),
        (pair(status="empty question"), FilterRule(), ("empty question", None)),
        (pair(filter_score=0.2), FilterRule(min_score=0.5), ("low filter score", None)),
        (pair(filter_score=0.5), FilterRule(min_score=0.5), (None, None)),  # at the threshold: kept
    ],
)
def test_verdict(p, rule, expected):
    assert verdict(p, rule) == expected


def test_a_failed_presupposition_rejects_only_under_a_rule_that_asks_it():
    none = [CIRCLE[0] | {"answer": "no"}, CIRCLE[1] | {"answer": "0"}]
    several = [CIRCLE[0], CIRCLE[1] | {"answer": "2"}]
    p = pair(checks=none)
    assert verdict(p, FilterRule()) == ("no such object", "Is there a red circle? no")
    assert verdict(p, FilterRule(presupposition="count")) == (
        "no such object",
        "How many red circles are there? 0",
    )  # a count of 0: there is none
    assert verdict(p, FilterRule(presupposition="none")) == (None, None)
    q = pair(checks=several)
    assert verdict(q, FilterRule(presupposition="exists")) == (None, None)  # there is one: fine
    assert verdict(q, FilterRule()) == ("not one object", "How many red circles are there? 2")


def test_apply_rule_splits_and_counts_by_type_and_reason():
    pairs = [
        pair(key="a"),
        pair(key="a", question="Is the circle red?", answer="yes", filter_answer="no", type="yes/no"),
        pair(key="b", answer="3", filter_answer="3", type="number", question="How many circles are there?"),
        pair(key="b", status="duplicate question", answer=None, filter_answer=None),
    ]
    kept, rejected, counts = apply_rule(pairs, FilterRule(), "00007")
    assert {k: [q["question"] for q in v] for k, v in kept.items()} == {
        "a": ["What color is the red circle?"],
        "b": ["How many circles are there?"],
    }
    assert kept["a"][0] == {
        "question": "What color is the red circle?",
        "answer": "red",
        "type": "other",
        "filter_answer": "red",
        "score": 0.8,
        "jade_type": None,  # set under generate.condition: region (tests/stages/test_region_condition.py)
        "region": None,
    }
    assert all(isinstance(r, Rejection) and r.shard == "00007" for r in rejected)
    assert [(r.key, r.reason, r.answer, r.filter_answer) for r in rejected] == [
        ("a", "answer mismatch", "yes", "no"),
        ("b", "duplicate question", None, None),
    ]
    assert counts == {
        "qa_kept": 2,
        "qa_rejected": 2,
        "rejected_by_reason": {"answer mismatch": 1, "duplicate question": 1},
        "by_type": {
            "yes/no": {"qa_rejected": 1},
            "number": {"qa_kept": 1},
            "other": {"qa_kept": 1, "qa_rejected": 1},
        },
    }
