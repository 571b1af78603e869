"""The official VQA v2 answer normalization, reproduced faithfully from the VQA evaluation script
(GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py), quirks included:

- the period regex is ``(?!<=\\d)(\\.)(?!\\d)``: a *lookahead* for ``<=digit`` (the authors meant a lookbehind),
  so it strips every period not followed by a digit;
- ``periodStrip.sub("", text, re.UNICODE)`` passes ``re.UNICODE`` (32) as the *count*, so at most 32 periods
  are stripped;
- punctuation next to a space, or anywhere in a text holding a digit-comma-digit, is deleted; otherwise it
  becomes a space;
- number words zero..ten (and "none") become digits, articles are dropped, contractions gain apostrophes.
"""

from __future__ import annotations

import re

CONTRACTIONS = {
    "aint": "ain't",
    "arent": "aren't",
    "cant": "can't",
    "couldve": "could've",
    "couldnt": "couldn't",
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "didnt": "didn't",
    "doesnt": "doesn't",
    "dont": "don't",
    "hadnt": "hadn't",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hasnt": "hasn't",
    "havent": "haven't",
    "hed": "he'd",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "hes": "he's",
    "howd": "how'd",
    "howll": "how'll",
    "hows": "how's",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "Im": "I'm",
    "Ive": "I've",
    "isnt": "isn't",
    "itd": "it'd",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "itll": "it'll",
    "let's": "let's",
    "maam": "ma'am",
    "mightnt": "mightn't",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "mightve": "might've",
    "mustnt": "mustn't",
    "mustve": "must've",
    "neednt": "needn't",
    "notve": "not've",
    "oclock": "o'clock",
    "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shant": "shan't",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldve": "should've",
    "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll",
    "somebodys": "somebody's",
    "someoned": "someone'd",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "someonell": "someone'll",
    "someones": "someone's",
    "somethingd": "something'd",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "somethingll": "something'll",
    "thats": "that's",
    "thered": "there'd",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "therere": "there're",
    "theres": "there's",
    "theyd": "they'd",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "theyll": "they'll",
    "theyre": "they're",
    "theyve": "they've",
    "twas": "'twas",
    "wasnt": "wasn't",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "weve": "we've",
    "werent": "weren't",
    "whatll": "what'll",
    "whatre": "what're",
    "whats": "what's",
    "whatve": "what've",
    "whens": "when's",
    "whered": "where'd",
    "wheres": "where's",
    "whereve": "where've",
    "whod": "who'd",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wholl": "who'll",
    "whos": "who's",
    "whove": "who've",
    "whyll": "why'll",
    "whyre": "why're",
    "whys": "why's",
    "wont": "won't",
    "wouldve": "would've",
    "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall": "y'all",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd": "you'd",
    "youd've": "you'd've",
    "you'dve": "you'd've",
    "youll": "you'll",
    "youre": "you're",
    "youve": "you've",
}
MANUAL_MAP = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = ("a", "an", "the")
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
PUNCT = [
    ";",
    r"/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]


def process_punctuation(text: str) -> str:
    out = text
    for p in PUNCT:
        # Punctuation touching a space, or any punctuation in a text with a digit-comma-digit, is deleted;
        # otherwise it separates words.
        if (p + " " in text or " " + p in text) or COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, re.UNICODE)  # sic: re.UNICODE lands in `count`, as in the original


def process_digit_article(text: str) -> str:
    words = []
    for word in text.lower().split():
        word = MANUAL_MAP.get(word, word)  # number words to digits
        if word not in ARTICLES:  # drop a, an, the
            words.append(word)
    return " ".join(CONTRACTIONS.get(w, w) for w in words)  # restore apostrophes


def normalize_answer(answer: str) -> str:
    """The answer as the VQA evaluation compares it."""
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(answer))


def answers_match(a: str, b: str, normalization: str = "vqa") -> bool:
    """The filter's rule: exact equality after normalization (``none``: after strip only)."""
    if normalization == "none":
        return a.strip() == b.strip()
    return normalize_answer(a) == normalize_answer(b)


def answer_type(answer: str) -> str:
    """VQA's answer types from a normalized answer: ``yes/no``, ``number`` or ``other``."""
    norm = normalize_answer(answer)
    if norm in ("yes", "no"):
        return "yes/no"
    if norm.replace(",", "").isdigit():
        return "number"
    return "other"


def vqa_accuracy(prediction: str, human_answers: list[str]) -> float:
    """Official VQA accuracy: min(#matches/3, 1) averaged over the 10 leave-one-out subsets of humans."""
    pred = normalize_answer(prediction)
    gts = [normalize_answer(a) for a in human_answers]
    accs = []
    for i in range(len(gts)):
        others = gts[:i] + gts[i + 1 :]
        accs.append(min(1.0, sum(1 for g in others if g == pred) / 3.0))
    return sum(accs) / len(accs) if accs else 0.0
