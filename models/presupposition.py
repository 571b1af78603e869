"""What a question presupposes, as questions a VQA model can answer: the filter's check on ill-posed questions.

A question that names "the red circle" presupposes that there is one red circle. When there is none (the
generator asked about something it imagined) or several, any answer to it is wrong, yet two models can still
agree on one. So before a pair is kept, the filter model is also asked, for every definite noun phrase of the
question, "Is there a red circle?" (must be yes) and "How many red circles are there?" (must be 1). Both are
ordinary VQA questions, of the kinds VQA v2 is full of, so the check needs nothing the filter was not
trained for, on the sample world or on real data.

The noun phrases come from a small rule for English questions, not from the sample world's grammar: each
"the ..." up to a relation phrase ("to the left of", "on", "next to", ...), a verb, or the end; in a yes/no
question "Is the X Y?" the last word is the predicate, not part of the noun phrase ("Is the circle red?").
"""

from __future__ import annotations

import re

__all__ = [
    "FAILED",
    "MODES",
    "RELATIONS",
    "checks",
    "failure",
    "need",
    "noun_phrases",
    "parse_record",
    "plural",
    "record",
]

# relation and verb phrases that end a noun phrase (longest first)
RELATIONS = (
    "to the left of",
    "to the right of",
    "in front of",
    "on top of",
    "next to",
    "above",
    "below",
    "under",
    "behind",
    "near",
    "beside",
    "on",
    "in",
    "at",
    "with",
    "of",
    "and",
    "or",
    "is",
    "are",
    "has",
    "have",
    "holding",
    "wearing",
)
_END = re.compile(r"(?:^|\s)(?:" + "|".join(re.escape(r) for r in RELATIONS) + r")\b")
_YES_NO = re.compile(r"^(?:is|are|does|do|can|was|were)\b")


def noun_phrases(question: str) -> list[str]:
    """The definite noun phrases a question presupposes, without "the" ("red circle"), in order."""
    q = " ".join(question.lower().replace("?", " ").split())
    found = []
    for m in re.finditer(r"\bthe\s+", q):
        rest = q[m.end() :]
        if q[: m.start()].endswith("to ") and rest.startswith(("left of", "right of")):
            continue  # the "the" of a relation phrase
        if q[: m.start()].endswith("are "):
            continue  # "are the circles red": a plural presupposes no single object
        stop = _END.search(rest)
        words = (rest[: stop.start()] if stop else rest).split()
        if not stop and _YES_NO.match(q) and m.start() == q.index(" ") + 1 and len(words) > 1:
            words = words[:-1]  # "is the circle red": "red" is what is asked, not which circle
        if words:
            found.append(" ".join(words))
    return found


def _an(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def plural(phrase: str) -> str:
    """English plural of a noun phrase's head (its last word): circle -> circles, box -> boxes, baby -> babies."""
    *rest, head = phrase.split()
    if head.endswith(("s", "x", "z", "ch", "sh")):
        head += "es"
    elif head.endswith("y") and head[-2:-1] not in "aeiou":
        head = head[:-1] + "ies"
    else:
        head += "s"
    return " ".join([*rest, head])


MODES = ("none", "exists", "count", "unique")
FAILED = {"yes": "no such object", "1": "not one object"}  # the rejection reason of each kind of check


def failure(expect: str, answer: str) -> str:
    """The rejection reason of a failed check: a count of 0 says there is no such object."""
    return FAILED["yes"] if expect == "1" and answer.strip() in ("0", "zero", "none") else FAILED[expect]


def record(check: str, answer: str | None) -> str:
    """A failed check as a rejected row records it (`check`): the check question, then the filter's answer."""
    return f"{check} {answer or '(no answer)'}"


def parse_record(recorded: str | None) -> tuple[str, str] | None:
    """(check question, the filter's answer) of a `record`; None for a row no check rejected."""
    if not recorded or "? " not in recorded:
        return None
    question, answer = recorded.rsplit("? ", 1)
    return question + "?", answer


def need(check: str) -> str:
    """The answer a check question of `checks` needs: yes to an existence question, 1 to a count."""
    return "yes" if check.startswith("Is there ") else "1"


def checks(question: str, mode: str = "unique") -> list[tuple[str, str]]:
    """(check question, the answer it needs) for every presupposition of ``question``: existence under
    ``exists``, a count of one under ``count`` (one question for both: there is one, and only one), both
    questions under ``unique`` (all that the filter stage asks, whatever the rule)."""
    out: list[tuple[str, str]] = []
    for np in noun_phrases(question) if mode != "none" else []:
        if mode in ("exists", "unique"):
            out.append((q := f"Is there {_an(np)} {np}?", need(q)))
        if mode in ("count", "unique"):
            out.append((q := f"How many {plural(np)} are there?", need(q)))
    return out
