"""Task formats of the generator and filter: prompts (prefixes), targets (suffixes), boxes as location tokens.

PaliGemma's conventions: a box is four location tokens ``<locYYYY>`` in the order y0 x0 y1 x1, each the
coordinate as a fraction of the image side quantised to 1024 bins; the answer prompt is ``answer en ...``.
"""

from __future__ import annotations

import re

__all__ = [
    "ANSWER_PROMPT",
    "CAPTION_PROMPT",
    "JADE_TYPES",
    "LOC_BINS",
    "QUESTION_PROMPT",
    "QUESTION_TYPES",
    "REGION_QUESTION_PROMPT",
    "answer_prompt",
    "box_to_tokens",
    "caption_target",
    "clean_text",
    "iou",
    "parse_box",
    "parse_caption",
    "jade_type",
    "question_prompt",
    "region_question_prompt",
    "strip_locs",
    "vqa_type",
]

LOC_BINS = 1024
QUESTION_TYPES = ("yes/no", "number", "other")  # VQA's answer types: what a question prompt asks for
CAPTION_PROMPT = "dense caption"
QUESTION_PROMPT = "question {qtype}"  # qtype in yes/no, number, other
ANSWER_PROMPT = "answer en {question}"
# JADE's question taxonomy (OPT_Questioner's `type`): the leading wh-word, or binary for a yes/no question
JADE_TYPES = ("what", "how", "where", "who", "why", "when", "binary")
# a question about one region (`generate.condition: region`), as JADE's generator asks it: the type, then the
# region's box as location tokens and its dense caption
REGION_QUESTION_PROMPT = "question {jade_type} {box} {caption}"
_LOC = re.compile(r"<loc(\d{4})>")
_WH = {
    "what": "what",
    "which": "what",
    "how": "how",
    "where": "where",
    "who": "who",
    "whom": "who",
    "whose": "who",
    "why": "why",
    "when": "when",
}
_AUX = frozenset(
    "is are was were am be do does did can could will would shall should may might must has have had".split()
)
_BY_VQA_TYPE = {"yes/no": "binary", "number": "how", "other": "what"}


def question_prompt(qtype: str) -> str:
    return QUESTION_PROMPT.format(qtype=qtype)


def region_question_prompt(jade_type_: str, box: tuple[float, float, float, float], caption: str) -> str:
    return REGION_QUESTION_PROMPT.format(jade_type=jade_type_, box=box_to_tokens(box), caption=clean_text(caption))


def jade_type(question: str, vqa_type_: str = "other") -> str:
    """JADE's question type from the leading word: a wh-word names its type (``which`` is ``what``, ``whom``
    and ``whose`` are ``who``); an auxiliary verb (is, are, does, can, ...) opens a ``binary`` question; any
    other opening falls back on the VQA answer type (yes/no -> binary, number -> how, other -> what)."""
    m = re.match(r"\s*([A-Za-z]+)", question or "")
    word = m.group(1).lower() if m else ""
    if word in _WH:
        return _WH[word]
    if word in _AUX:
        return "binary"
    return _BY_VQA_TYPE.get(vqa_type_, "what")


def vqa_type(jade_type_: str, question: str) -> str:
    """The VQA answer type a question of JADE type ``jade_type_`` asks for: binary -> yes/no, "how many" ->
    number, anything else -> other (the type that `generate.questions` counts and stats.json's by_type keys)."""
    if jade_type_ == "binary":
        return "yes/no"
    if jade_type_ == "how" and clean_text(question).lower().startswith("how many"):
        return "number"
    return "other"


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
