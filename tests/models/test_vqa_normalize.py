import pytest

from jade.models.vqa_normalize import answer_type, answers_match, normalize_answer, vqa_accuracy


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("Green.", "green"),  # VG's raw answers: capital and full stop
        ("Two.", "2"),  # number words become digits
        ("none", "0"),  # sic: the official map sends "none" to "0"
        ("A red shirt.", "red shirt"),  # articles dropped
        ("the top-left", "top left"),  # punctuation without a space next to it becomes a space
        ("yes !", "yes"),  # punctuation next to a space is deleted
        ("1,000", "1000"),  # digit-comma-digit: punctuation deleted
        ("dont", "don't"),  # contractions restored
        ("no.1", "no.1"),  # a period before a digit stays
        ("3.5", "3.5"),
        ("  Parked on the street.\n", "parked on street"),
        ("Red", "red"),
    ],
)
def test_official_normalization(raw, norm):
    assert normalize_answer(raw) == norm


def test_period_strip_count_quirk():
    # The official script passes re.UNICODE (32) as `count`: only the first 32 periods go.
    assert normalize_answer("a" + "." * 40) == "a" + "." * 8


def test_match_rule_and_types():
    assert answers_match("Two.", "2")
    assert answers_match("The red one", "red one")
    assert not answers_match("red", "blue")
    assert not answers_match("Two.", "2", normalization="none")
    assert [answer_type(a) for a in ("Yes.", "two", "top left")] == ["yes/no", "number", "other"]


@pytest.mark.parametrize("matches, acc", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_accuracy(matches, acc):
    humans = ["down"] * matches + ["up"] * (10 - matches)
    assert vqa_accuracy("down", humans) == pytest.approx(acc)
