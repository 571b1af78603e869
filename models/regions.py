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
from dataclasses import dataclass

from jade.models.tasks import iou

__all__ = [
    "RegionRule",
    "agreeing",
    "consensus",
    "group_caption",
    "mean_box",
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


def mean_box(draws: list[Draw], group: list[int]) -> Box:
    """The mean of the boxes of ``group`` (box fusion)."""
    return tuple(sum(c) / len(group) for c in zip(*(draws[j][1][0] for j in group), strict=True))  # type: ignore[return-value]


def group_caption(draws: list[Draw], group: list[int], rule: RegionRule, own: int) -> str:
    """The caption of draw ``own`` fused with its ``group``: the consensus caption if asked, else its own."""
    return consensus([draws[j] for j in group]) if rule.caption == "consensus" else draws[own][1][1]


def select_regions(draws: list[Draw], rule: RegionRule) -> tuple[list[dict], Counter]:
    """The kept regions (``{"bbox", "caption", "score"}``, best first) of one image's parsed draws, and
    the counts of what was dropped (``regions_unsupported``, ``regions_duplicate``).

    Without ``support`` every draw is its own group. Boxes are fused first, since near-duplicates are judged on
    fused boxes; captions only for the boxes kept (the consensus caption costs the square of a group's size and
    changes neither a box nor a score)."""
    counts: Counter = Counter()
    if rule.support:
        groups = agreeing(draws, rule.support_words)
        candidates = [i for i, g in enumerate(groups) if len(g) > rule.support]
        counts["regions_unsupported"] = len(draws) - len(candidates)
    else:
        groups, candidates = [[i] for i in range(len(draws))], list(range(len(draws)))
    boxes = [mean_box(draws, groups[i]) for i in candidates]
    # the better of two near-duplicates: more agreeing draws (rank: support), then the higher score
    sup = [len(groups[i]) if rule.rank == "support" else 0 for i in candidates]
    kept: list[int] = []
    for k in sorted(range(len(candidates)), key=lambda k: (-sup[k], -draws[candidates[k]][0])):
        if not any(iou(boxes[k], boxes[j]) > rule.dedup_iou for j in kept):
            kept.append(k)
    counts["regions_duplicate"] = len(candidates) - len(kept)
    return [
        {
            "bbox": list(boxes[k]),
            "caption": group_caption(draws, groups[candidates[k]], rule, candidates[k]),
            "score": draws[candidates[k]][0],
        }
        for k in kept
    ], counts
