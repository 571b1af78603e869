"""CIDEr-D, as pycocoevalcap's ``cider_scorer.py`` computes it (Vedantam et al. 2015), in pure Python.

Per image, the candidate and each reference become TF-IDF vectors of their 1- to 4-grams; the IDF is
log(#images) - log(max(1, df)) with df counted over the images' reference sets (the corpus being scored).
For each n: the similarity to one reference is sum over the candidate's n-grams of
min(cand, ref) * ref (the clipping of CIDEr-D), divided by both vector norms, times a Gaussian length
penalty exp(-(delta^2) / (2 sigma^2)) with sigma = 6. An image's score is the mean over n of the similarities
summed over references, divided by the number of references, times 10; the corpus score is the mean.

Quirk kept from the reference code: the "length" in the penalty counts *bigrams* (``if n == 1: length +=
term_freq`` with ``n = len(ngram) - 1``), not words. Tokenisation stands in for the PTB tokenizer (Java):
lower case, punctuation removed, split on whitespace.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict

_PUNCT = re.compile(r"[^\w\s]")


def tokenize(text: str) -> list[str]:
    return _PUNCT.sub(" ", text.lower()).split()


def ngrams(words: list[str], n: int = 4) -> Counter:
    """Counts of every k-gram, k = 1..n, as tuples (pycocoevalcap's precook)."""
    return Counter(tuple(words[i : i + k]) for k in range(1, n + 1) for i in range(len(words) - k + 1))


def _vec(counts: Counter, df: dict, log_images: float, n: int):
    vec = [dict() for _ in range(n)]
    norm = [0.0] * n
    length = 0
    for gram, tf in counts.items():
        k = len(gram) - 1
        vec[k][gram] = tf * (log_images - math.log(max(1.0, df.get(gram, 0.0))))
        norm[k] += vec[k][gram] ** 2
        if k == 1:  # sic: bigram count, as in the reference implementation
            length += tf
    return vec, [math.sqrt(x) for x in norm], length


def _sim(hyp, ref, sigma: float, n: int) -> list[float]:
    (vh, nh, lh), (vr, nr, lr) = hyp, ref
    penalty = math.exp(-((lh - lr) ** 2) / (2 * sigma**2))
    out = []
    for k in range(n):
        val = sum(min(v, vr[k].get(g, 0.0)) * vr[k].get(g, 0.0) for g, v in vh[k].items())
        if nh[k] != 0 and nr[k] != 0:
            val /= nh[k] * nr[k]
        out.append(val * penalty)
    return out


def cider_d(
    candidates: list[str], references: list[list[str]], n: int = 4, sigma: float = 6.0
) -> tuple[float, list[float]]:
    """(corpus CIDEr-D, per-image scores) of candidate captions against their reference sets."""
    if len(candidates) != len(references):
        raise ValueError("one reference list per candidate")
    cands = [ngrams(tokenize(c), n) for c in candidates]
    refs = [[ngrams(tokenize(r), n) for r in rs] for rs in references]
    df: dict = defaultdict(float)
    for rs in refs:  # document frequency: in how many images' reference sets an n-gram occurs
        for gram in {g for r in rs for g in r}:
            df[gram] += 1
    log_images = math.log(float(len(refs))) if refs else 0.0
    scores = []
    for c, rs in zip(cands, refs, strict=True):
        hyp = _vec(c, df, log_images, n)
        total = [0.0] * n
        for r in rs:
            total = [
                a + b for a, b in zip(total, _sim(hyp, _vec(r, df, log_images, n), sigma, n), strict=True)
            ]
        scores.append(sum(total) / n / max(1, len(rs)) * 10.0)
    return (sum(scores) / len(scores) if scores else 0.0), scores
