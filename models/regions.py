"""Dense captions from sampled (box, caption) draws: which boxes to keep, with which caption. Pure functions.

The generator samples ``generate.captions`` dense captions of an image (top-K); each is a box and a phrase.
A stray draw is wrong more often than a box the model comes back to, so a box is kept only when enough of
the image's other draws agree with it (``support``): their boxes overlap it at IoU >= 0.5 and, with
``support_words``, their captions share most of its words. A kept box is the mean of the boxes that agree
(box fusion) and takes the caption they agree on most (``caption: consensus``). Near-duplicates of a
better-scored kept box are dropped last.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from jade.models.tasks import iou

__all__ = [
    "RegionRule",
    "agreeing",
    "consensus",
    "dedupe",
    "fuse",
    "select_regions",
]

Box = tuple[float, float, float, float]
Draw = tuple[float, tuple[Box, str]]  # (score, (box, caption)) of one parsed sample

_ARTICLES = frozenset(("a", "an", "the"))
AGREE_IOU = 0.5  # two draws' boxes agree at this overlap or more


@dataclass(frozen=True)
class RegionRule:
    support: int = 0  # other draws that must agree with a box for it to be kept; 0 keeps every box
    support_words: float = 0.0  # a draw agrees only when its caption shares this word F1 too (0: boxes alone)
    caption: str = "best"  # best: the box's own caption | consensus: the one its agreeing draws agree on most
    dedup_iou: float = 0.7  # a kept box overlapping a better-scored kept box by more is dropped


def words(caption: str) -> Counter:
    return Counter(w for w in caption.lower().split() if w not in _ARTICLES)


def f1(a: Counter, b: Counter) -> float:
    common = sum((a & b).values())
    return 2 * common / (sum(a.values()) + sum(b.values())) if common else 0.0


def consensus(draws: list[Draw]) -> str:
    """The caption that agrees most with the others of a group of draws (minimum Bayes risk selection under
    word F1, articles ignored); ties go to the higher-scored draw."""
    ws = [words(caption) for _, (_, caption) in draws]
    best = max(
        range(len(draws)),
        key=lambda i: (sum(f1(ws[i], w) for j, w in enumerate(ws) if j != i), draws[i][0]),
    )
    return draws[best][1][1]


def agreeing(draws: list[Draw], support_words: float) -> list[list[int]]:
    """For each draw, the draws that agree with it (itself included): boxes at IoU >= 0.5 and, with
    ``support_words``, captions sharing at least that word F1."""
    boxes = [box for _, (box, _) in draws]
    ws = [words(caption) for _, (_, caption) in draws]
    return [
        [
            j
            for j, o in enumerate(boxes)
            if iou(b, o) >= AGREE_IOU and (i == j or f1(ws[i], ws[j]) >= support_words)
        ]
        for i, b in enumerate(boxes)
    ]


def fuse(draws: list[Draw], group: list[int], rule: RegionRule, own: int) -> Draw:
    """Draw ``own`` as its agreeing ``group`` sees it: the mean box, and the consensus caption if asked."""
    box = tuple(sum(c) / len(group) for c in zip(*(draws[j][1][0] for j in group), strict=True))
    caption = consensus([draws[j] for j in group]) if rule.caption == "consensus" else draws[own][1][1]
    return draws[own][0], (box, caption)  # type: ignore[return-value]


def dedupe(draws: list[Draw], dedup_iou: float) -> tuple[list[Draw], int]:
    """Best score first; a box overlapping an already kept one by more than ``dedup_iou`` is dropped."""
    kept: list[Draw] = []
    for d in sorted(draws, key=lambda t: -t[0]):
        if not any(iou(d[1][0], k[1][0]) > dedup_iou for k in kept):
            kept.append(d)
    return kept, len(draws) - len(kept)


def select_regions(draws: list[Draw], rule: RegionRule) -> tuple[list[dict], Counter]:
    """The kept regions (``{"bbox", "caption", "score"}``, best score first) of one image's parsed draws, and
    the counts of what was dropped (``regions_unsupported``, ``regions_duplicate``)."""
    counts: Counter = Counter()
    if rule.support:
        groups = agreeing(draws, rule.support_words)
        supported = [i for i, g in enumerate(groups) if len(g) > rule.support]
        counts["regions_unsupported"] = len(draws) - len(supported)
        draws = [fuse(draws, groups[i], rule, i) for i in supported]
    kept, counts["regions_duplicate"] = dedupe(draws, rule.dedup_iou)
    return [{"bbox": list(box), "caption": caption, "score": s} for s, (box, caption) in kept], counts
