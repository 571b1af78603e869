"""Dense captions from sampled (box, caption) draws: which boxes to keep, with which caption. Pure functions.

The generator samples ``generate.captions`` dense captions of an image (top-K); each is a box and a phrase.
A stray draw is wrong more often than a box the model comes back to, so a box is kept only when enough of
the image's other draws agree with it (``support``): their boxes overlap it at IoU >= 0.5 and, with
``support_words``, their captions share most of its words. A kept box is the mean of the boxes that agree
(box fusion) and takes the caption they agree on most (``caption: consensus``). Near-duplicates of a better
kept box are dropped last: better by score, or (``rank: support``) by the number of draws that agree with it,
then by score. Ranked by score, a box that a few draws shifted off the object outranks, by a lucky score, the
box most draws agree on; ranked by support, the box most draws agree on comes first and its shifted
neighbours are its duplicates (research/regions.py measures both).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

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
    dedup_iou: float = 0.7  # a kept box overlapping a better kept box by more is dropped
    rank: str = "score"  # the better of two near-duplicates: score | support (agreeing draws, then score)


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


def dedupe(draws: list[Draw], dedup_iou: float, support: list[int] | None = None) -> tuple[list[Draw], int]:
    """Best first (most ``support``, when given, then best score); a box overlapping an already kept one by
    more than ``dedup_iou`` is dropped."""
    kept = _keep([box for _, (box, _) in draws], [s for s, _ in draws], support, dedup_iou)
    return [draws[i] for i in kept], len(draws) - len(kept)


def _keep(boxes: list[Box], scores: list[float], support: list[int] | None, dedup_iou: float) -> list[int]:
    sup = support or [0] * len(boxes)
    kept: list[int] = []
    for i in sorted(range(len(boxes)), key=lambda i: (-sup[i], -scores[i])):
        if not any(iou(boxes[i], boxes[k]) > dedup_iou for k in kept):
            kept.append(i)
    return kept


def select_regions(draws: list[Draw], rule: RegionRule) -> tuple[list[dict], Counter]:
    """The kept regions (``{"bbox", "caption", "score"}``, best first) of one image's parsed draws, and
    the counts of what was dropped (``regions_unsupported``, ``regions_duplicate``)."""
    counts: Counter = Counter()
    if not rule.support:
        kept, counts["regions_duplicate"] = dedupe(draws, rule.dedup_iou)
    else:
        groups = agreeing(draws, rule.support_words)
        supported = [i for i, g in enumerate(groups) if len(g) > rule.support]
        counts["regions_unsupported"] = len(draws) - len(supported)
        # boxes are fused first (duplicates are judged on fused boxes); captions only for the boxes kept, since
        # the consensus caption costs the square of a group's size and changes neither a score nor a box
        boxes = [fuse(draws, groups[i], replace(rule, caption="best"), i)[1][0] for i in supported]
        support = [len(groups[i]) for i in supported] if rule.rank == "support" else None
        order = _keep(boxes, [draws[i][0] for i in supported], support, rule.dedup_iou)
        counts["regions_duplicate"] = len(supported) - len(order)
        kept = [fuse(draws, groups[supported[k]], rule, supported[k]) for k in order]
    return [{"bbox": list(box), "caption": caption, "score": s} for s, (box, caption) in kept], counts
