"""The chance or trivial baseline of each downstream metric, computed from the benchmark files alone (no model):

- VQA: the answer prior per question type (VQA v2's ``question_type``: "is there a", "how many", "what color
  is the", ...): each val question gets the most frequent train answer of its type, scored with the official
  metric (the "per Q-type prior" baseline of the VQA paper);
- retrieval: a random ranking. Image -> text at K: the chance that one of an image's captions is among K
  texts drawn from all of them; text -> image at K: K / images;
- captioning: a constant caption, the most frequent reference of the captioning train split, given for every
  test image and scored with CIDEr-D against the test references;
- the region task: one of the image's object boxes at random (the mean of 1 / candidates), and, for the
  record, a constant box: the train target box that is right (IoU >= 0.5) for most train expressions.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from math import comb
from pathlib import Path

import numpy as np

from jade.models.pretrain.cider import cider_d
from jade.models.vqa_normalize import vqa_accuracy


def retrieval_chance(images: int, texts_per_image: int, k: int) -> tuple[float, float]:
    """(image -> text, text -> image) recall at ``k`` of a random ranking."""
    total = images * texts_per_image
    k_t = min(k, total)
    i2t = 1.0 - comb(total - texts_per_image, k_t) / comb(total, k_t)
    return i2t, min(k, images) / images


def vqa_prior(train_annotations: str | Path, val_annotations: str | Path, limit: int | None = None) -> float:
    """Official VQA accuracy of answering each val question with its question type's most frequent train
    answer (the first ``limit`` val questions by id, as the evaluation takes them)."""
    train = json.loads(Path(train_annotations).read_text())["annotations"]
    counts: dict[str, Counter] = defaultdict(Counter)
    for a in train:
        counts[a["question_type"]][a["multiple_choice_answer"]] += 1
    overall = Counter(a["multiple_choice_answer"] for a in train).most_common(1)[0][0]
    val = sorted(json.loads(Path(val_annotations).read_text())["annotations"], key=lambda a: a["question_id"])
    scores = []
    for a in val[:limit]:
        prior = counts[a["question_type"]].most_common(1)[0][0] if counts[a["question_type"]] else overall
        scores.append(vqa_accuracy(prior, [x["answer"] for x in a["answers"]]))
    return float(np.mean(scores)) if scores else 0.0


def constant_caption(train_refs: list[list[str]]) -> str:
    """The most frequent train reference (ties: the shortest, then the first alphabetically)."""
    counts = Counter(r for refs in train_refs for r in refs)
    return min(counts, key=lambda c: (-counts[c], len(c), c))


def constant_caption_cider(train_refs: list[list[str]], test_refs: list[list[str]]) -> tuple[str, float]:
    caption = constant_caption(train_refs)
    return caption, cider_d([caption] * len(test_refs), test_refs)[0]


def _ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (n x 4) with every box of ``b`` (m x 4): n x m."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def constant_box_accuracy(train_boxes: list[tuple], test_boxes: list[tuple]) -> tuple[tuple, float]:
    """(the best constant box on train, its accuracy at IoU >= 0.5 on test)."""
    train = np.unique(np.round(np.asarray(train_boxes, dtype=float), 3), axis=0)
    hits = (_ious(train, np.asarray(train_boxes, dtype=float)) >= 0.5).sum(1)
    best = train[int(hits.argmax())]
    test = (_ious(best[None, :], np.asarray(test_boxes, dtype=float)) >= 0.5).mean()
    return tuple(float(v) for v in best), float(test)


def random_candidate(candidates: list[list[tuple]], targets: list[tuple]) -> float:
    """Expected accuracy of choosing one candidate box at random (each candidate right when IoU >= 0.5)."""
    from jade.models.tasks import iou

    rates = [
        sum(iou(c, t) >= 0.5 for c in cands) / len(cands)
        for cands, t in zip(candidates, targets, strict=True)
    ]
    return float(np.mean(rates)) if rates else 0.0
