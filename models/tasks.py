"""Task formats of the generator and filter: prompts (prefixes), targets (suffixes), boxes as location tokens.

PaliGemma's conventions: a box is four location tokens ``<locYYYY>`` in the order y0 x0 y1 x1, each the
coordinate as a fraction of the image side quantised to 1024 bins; the answer prompt is ``answer en ...``.
"""

from __future__ import annotations

import re

__all__ = [
    "ANSWER_PROMPT",
    "CAPTION_PROMPT",
    "LOC_BINS",
    "QUESTION_PROMPT",
    "QUESTION_TYPES",
    "answer_prompt",
    "box_to_tokens",
    "caption_target",
    "clean_text",
    "iou",
    "parse_box",
    "parse_caption",
    "question_prompt",
    "strip_locs",
]

LOC_BINS = 1024
QUESTION_TYPES = ("yes/no", "number", "other")  # VQA's answer types: what a question prompt asks for
CAPTION_PROMPT = "dense caption"
QUESTION_PROMPT = "question {qtype}"  # qtype in yes/no, number, other
ANSWER_PROMPT = "answer en {question}"
_LOC = re.compile(r"<loc(\d{4})>")


def question_prompt(qtype: str) -> str:
    return QUESTION_PROMPT.format(qtype=qtype)


def answer_prompt(question: str) -> str:
    return ANSWER_PROMPT.format(question=" ".join(question.split()))


def box_to_tokens(box: tuple[float, float, float, float]) -> str:
    """(x0, y0, x1, y1) as fractions in [0, 1] -> ``<loc y0><loc x0><loc y1><loc x1>``."""
    x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in box)
    return "".join(f"<loc{round(v * (LOC_BINS - 1)):04d}>" for v in (y0, x0, y1, x1))


def caption_target(box: tuple[float, float, float, float], phrase: str) -> str:
    return f"{box_to_tokens(box)} {clean_text(phrase)}"


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """Four leading location tokens -> (x0, y0, x1, y1), or None (fewer, or a degenerate box)."""
    locs = [int(m) / (LOC_BINS - 1) for m in _LOC.findall(text.strip()[: 4 * len("<loc0000>")])]
    if len(locs) < 4 or not text.strip().startswith("<loc"):
        return None
    y0, x0, y1, x1 = locs[:4]
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def parse_caption(text: str) -> tuple[tuple[float, float, float, float], str] | None:
    """A generated dense caption -> ((x0, y0, x1, y1), caption), or None when it is malformed
    (not exactly four leading location tokens, an empty caption, or a degenerate box)."""
    text = text.strip()
    locs = []
    pos = 0
    while len(locs) < 4:
        m = _LOC.match(text, pos)
        if not m:
            return None
        locs.append(int(m.group(1)) / (LOC_BINS - 1))
        pos = m.end()
    caption = clean_text(_LOC.sub("", text[pos:]))
    y0, x0, y1, x1 = locs
    if not caption or x1 <= x0 or y1 <= y0:
        return None
    return (x0, y0, x1, y1), caption


def clean_text(text: str) -> str:
    """Collapse whitespace; strip."""
    return " ".join(text.split())


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def strip_locs(texts: list[str]) -> list[str]:
    """Texts without location tokens (the processor adds those; keep them out of a tokenizer's corpus)."""
    return [_LOC.sub(" ", t) for t in texts]
