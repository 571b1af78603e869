"""The pretrainer's metrics against their reference definitions, on hand-made cases."""

import math
from collections import defaultdict

import pytest

from jade.models.pretrain.cider import cider_d
from jade.models.vqa_normalize import vqa_accuracy


@pytest.mark.parametrize("matches,expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_accuracy_leave_one_out(matches, expected):
    humans = ["two"] * matches + ["blue"] * (10 - matches)  # "two" normalises to "2"
    assert vqa_accuracy("2", humans) == pytest.approx(expected)


def test_vqa_accuracy_is_the_mean_over_ten_leave_one_out_subsets():
    humans = ["yes"] * 2 + ["no"] * 8
    by_hand = (
        sum(min(1.0, [h for j, h in enumerate(humans) if j != i].count("yes") / 3) for i in range(10)) / 10
    )
    assert vqa_accuracy("Yes.", humans) == pytest.approx(by_hand) == pytest.approx(0.6)


def test_cider_single_image_is_zero():
    # one image: idf = log(1) - log(df) = 0 for every n-gram, so every vector is zero
    assert cider_d(["a red circle"], [["a red circle"]])[0] == 0.0


def test_cider_exact_match_two_images():
    # idf = log 2 everywhere; n = 1, 2 give cosine 1, n = 3, 4 have no n-grams: mean 0.5, x 10
    score, per_image = cider_d(["a b", "c d"], [["a b"], ["c d"]])
    assert per_image == pytest.approx([5.0, 5.0]) and score == pytest.approx(5.0)


def test_cider_clipping_and_length_penalty_by_hand():
    score, per_image = cider_d(["a b a b", "c d"], [["a b"], ["c d"]])
    # unigrams: hyp (2L, 2L) vs ref (L, L): clipped dot 2L^2 over norms sqrt(8)L * sqrt(2)L = 0.5
    # bigrams: hyp {ab: 2L, ba: L} vs ref {ab: L}: L^2 / (sqrt(5)L * L); tri/4-grams: the ref has none: 0
    # length = bigram count (reference quirk): 3 vs 1, penalty exp(-2^2 / (2 * 6^2))
    first = (0.5 + 1 / math.sqrt(5)) / 4 * math.exp(-4 / 72) * 10
    assert per_image == pytest.approx([first, 5.0])
    assert score == pytest.approx((first + 5.0) / 2)


def _reference_cider(cands, refs, n=4, sigma=6.0):
    """A step-by-step transcription of pycocoevalcap's CiderScorer (cook, doc freq, counts2vec, sim)."""

    def precook(s):
        words, counts = s.split(), defaultdict(int)
        for k in range(1, n + 1):
            for i in range(len(words) - k + 1):
                counts[tuple(words[i : i + k])] += 1
        return counts

    crefs = [[precook(r) for r in rs] for rs in refs]
    ctest = [precook(c) for c in cands]
    df = defaultdict(float)
    for rs in crefs:
        for ngram in {ng for r in rs for ng, _ in r.items()}:
            df[ngram] += 1
    ref_len = math.log(float(len(crefs)))

    def counts2vec(cnts):
        vec, norm, length = [defaultdict(float) for _ in range(n)], [0.0] * n, 0
        for ngram, tf in cnts.items():
            k = len(ngram) - 1
            vec[k][ngram] = float(tf) * (ref_len - math.log(max(1.0, df[ngram])))
            norm[k] += vec[k][ngram] ** 2
            if k == 1:
                length += tf
        return vec, [math.sqrt(x) for x in norm], length

    def sim(vh, vr, nh, nr, lh, lr):
        delta, val = float(lh - lr), [0.0] * n
        for k in range(n):
            for ngram in vh[k]:
                val[k] += min(vh[k][ngram], vr[k][ngram]) * vr[k][ngram]
            if nh[k] != 0 and nr[k] != 0:
                val[k] /= nh[k] * nr[k]
            val[k] *= math.e ** (-(delta**2) / (2 * sigma**2))
        return val

    scores = []
    for test, rs in zip(ctest, crefs, strict=True):
        vec, norm, length = counts2vec(test)
        total = [0.0] * n
        for r in rs:
            vr, nr, lr = counts2vec(r)
            total = [a + b for a, b in zip(total, sim(vec, vr, norm, nr, length, lr), strict=True)]
        scores.append(sum(total) / n / len(rs) * 10.0)
    return sum(scores) / len(scores), scores


def test_cider_matches_the_reference_algorithm_with_several_references():
    cands = ["a man riding a horse on a beach", "two dogs play in the snow", "a red bus", "the cat sleeps"]
    refs = [
        ["a man rides a horse along the beach", "a person on a horse at the sea", "man riding horse"],
        ["two dogs playing in snow", "dogs run in the snow together"],
        ["a red double decker bus on the street", "a bus that is red", "red bus parked"],
        ["a cat sleeping on a sofa", "the cat is asleep"],
    ]
    ours, ours_each = cider_d(cands, refs)
    ref, ref_each = _reference_cider(cands, refs)
    assert ours == pytest.approx(ref) and ours_each == pytest.approx(ref_each)
    assert ours > 0
