"""The filter's presupposition checks: which noun phrases a question presupposes, and the VQA questions
that check them."""

import pytest

from jade.models.presupposition import checks, need, noun_phrases, parse_record, plural, record


@pytest.mark.parametrize(
    ("question", "phrases"),
    [
        ("Is there a red circle?", []),  # existence questions presuppose nothing
        ("How many circles are there?", []),
        ("What color is the circle?", ["circle"]),
        ("Is the circle red?", ["circle"]),  # the last word is the predicate
        ("Is the large red circle small?", ["large red circle"]),
        ("Is the red circle to the left of the blue square?", ["red circle", "blue square"]),
        ("Is the blue square below the red circle?", ["blue square", "red circle"]),
        ("What shape is the red object?", ["red object"]),
        ("Where is the small green triangle?", ["small green triangle"]),
        ("Is the man holding an umbrella?", ["man"]),  # real VQA questions too
        ("What is on the table?", ["table"]),
        ("Are the circles red?", []),  # a plural presupposes no single object
    ],
)
def test_noun_phrases(question, phrases):
    assert noun_phrases(question) == phrases


def test_checks_by_mode():
    q = "Where is the red box?"
    assert checks(q, "none") == []
    assert checks(q, "exists") == [("Is there a red box?", "yes")]
    assert checks(q, "unique") == [("Is there a red box?", "yes"), ("How many red boxes are there?", "1")]
    assert checks(q, "count") == [("How many red boxes are there?", "1")]
    assert checks("What color is the apple?", "exists") == [("Is there an apple?", "yes")]
    assert [plural(w) for w in ("circle", "box", "baby", "boy", "bus")] == [
        "circles",
        "boxes",
        "babies",
        "boys",
        "buses",
    ]


def test_a_count_of_zero_is_no_such_object():
    from jade.models.presupposition import failure

    assert failure("1", "0") == "no such object" and failure("1", "2") == "not one object"
    assert failure("yes", "no") == "no such object"


def test_a_failed_check_is_recorded_and_read_back():
    """The rejected row's `check` (filter stage) reads back as its question and answer (`jade eval`)."""
    for check, want in checks("Is the red circle left of the big blue square?", "unique"):
        assert need(check) == want
        assert parse_record(record(check, "2")) == (check, "2")
    assert parse_record(record("How many red circles are there?", None)) == (
        "How many red circles are there?",
        "(no answer)",
    )
    assert parse_record(None) is None and parse_record("") is None
