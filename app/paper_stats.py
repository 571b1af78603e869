"""The paper table's statistics, pure functions over per-seed numbers (no models, no files):

- a setting's metric: mean and sample standard deviation over seeds;
- a difference that answers a claim: paired over seeds (seed s of one setting against seed s of the other:
  the same vision tower, the same downstream fine-tune draws), its mean and standard error sd(d) / sqrt(n);
- the same difference's standard error by bootstrap over the held-out items (questions, images, captions,
  expressions: the same items for every run), for the record: it shows how much of the spread is the test
  set's size rather than training;
- the minimum detectable difference at two standard errors.
"""

from __future__ import annotations

import math
import statistics

import numpy as np

# the per-item scores behind each metric (in each run's metrics.json, in test order)
ITEMS = {
    "vqa_accuracy": "vqa_scores",
    "retrieval_i2t_r1": "retrieval_i2t_hits",
    "retrieval_t2i_r1": "retrieval_t2i_hits",
    "cider": "cider_scores",
    "region_accuracy": "region_hits",
}


def summary(values: dict[int, float | None]) -> dict:
    """{mean, sd, seeds, values} over the seeds that have a value."""
    vals = {s: v for s, v in sorted(values.items()) if v is not None}
    xs = list(vals.values())
    return {
        "mean": statistics.fmean(xs) if xs else None,
        "sd": statistics.stdev(xs) if len(xs) > 1 else (0.0 if xs else None),
        "seeds": len(xs),
        "values": {str(s): v for s, v in vals.items()},
    }


def paired(x: dict[int, float | None], y: dict[int, float | None]) -> dict:
    """x - y over the seeds both have: {mean, se, seeds, values}; se is None below two seeds."""
    common = sorted(s for s in x if s in y and x[s] is not None and y[s] is not None)
    d = [x[s] - y[s] for s in common]
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else None
    return {
        "mean": statistics.fmean(d) if d else None,
        "se": se,
        "seeds": len(d),
        "values": {str(s): v for s, v in zip(common, d, strict=True)},
    }


def verdict(diff: dict, higher: str, lower: str) -> str:
    """A plain sentence: which is ahead, by how many standard errors, and whether two of them clear it."""
    m, se = diff["mean"], diff["se"]
    if m is None or se is None:
        return "not measured"
    if se == 0:
        if m == 0:
            return "equal on every seed (SE 0)"
        return f"{higher if m > 0 else lower} ahead by the same amount on every seed (SE 0)"
    z = m / se
    if abs(z) >= 2:
        return f"{higher if m > 0 else lower} ahead ({abs(z):.1f} SE)"
    return f"no difference shown ({z:+.1f} SE)"


def min_detectable(differences: dict[str, dict], metric: str) -> float | None:
    """Two standard errors of the least precise claim's difference on ``metric``: a true difference that size
    or larger shows as one in every claim of the table."""
    ses = [d[metric]["se"] for d in differences.values() if d.get(metric) and d[metric]["se"] is not None]
    return 2 * max(ses) if ses else None


def bootstrap_items(x: dict[int, list], y: dict[int, list], draws: int = 1000, seed: int = 0) -> float | None:
    """Standard error of the seed-averaged difference x - y by resampling the test items (the same resample for
    every seed and both settings: the items are shared)."""
    common = sorted(s for s in x if s in y and x[s] and y[s])
    if not common:
        return None
    d = np.mean([np.asarray(x[s], dtype=float) - np.asarray(y[s], dtype=float) for s in common], axis=0)
    rng = np.random.default_rng(seed)
    means = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(draws)]
    return float(np.std(means, ddof=1))
