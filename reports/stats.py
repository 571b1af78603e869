"""What a run's data looks like, from counts alone (no truth needed): stats.json (DESIGN.md section 7) from the
shards' completion records, plus rejections by reason and type, answer distributions per type (yes/no
balance, most frequent answers), question length and regions per image. Each shard counts its own rows into
mergeable histograms (`shard_data_counts`); `merge_stats` sums every record and derives the rates."""

from __future__ import annotations

from collections import Counter, defaultdict

from jade.models.tasks import QUESTION_TYPES
from jade.models.vqa_normalize import normalize_answer
from jade.pipeline.stats import ratio, sum_counts

# the contract's counts (DESIGN.md section 7), summed over the shards' records
COUNTS = (
    "images_in",
    "images_ok",
    "images_failed",
    "questions_generated",
    "qa_kept",
    "qa_rejected",
    "regions_generated",
    "regions_kept",
)


def merge_stats(records: dict[str, list[dict]]) -> dict:
    """stats.json from the completion records of the published shards (per stage: their records), so it
    survives restarts and adds up: section 7's counts summed, then the rates and summaries derived."""
    s = sum_counts(r["counts"] for recs in records.values() for r in recs)
    stats = {k: s.get(k, 0) for k in COUNTS}
    stats["keep_rate"] = ratio(stats["qa_kept"], stats["questions_generated"])
    stats["kept_per_image"] = ratio(stats["qa_kept"], stats["images_ok"])
    stats["regions_per_image"] = ratio(stats["regions_kept"], stats["images_ok"])
    stats["by_type"] = {}
    for t in QUESTION_TYPES:
        b = s.get("by_type", {}).get(t, {})
        g, k, r = (b.get(n, 0) for n in ("questions_generated", "qa_kept", "qa_rejected"))
        stats["by_type"][t] = {
            "questions_generated": g,
            "qa_kept": k,
            "qa_rejected": r,
            "keep_rate": ratio(k, g),
        }
    stats["rejected_by_reason"] = dict(sorted(s.get("rejected_by_reason", {}).items()))
    for k in ("images_converted", "regions_malformed", "regions_duplicate", "regions_unsupported"):
        stats[k] = s.get(k, 0)
    stats["failure_reasons"] = dict(sorted(s.get("failure_reasons", {}).items()))
    stats["converted_from"] = dict(sorted(s.get("converted_from", {}).items()))
    return {**stats, **data_stats(s.get("data", {}), stats)}


# ------------------------------------------------------------------------------------ what the data looks like
def _words(text: str | None) -> int:
    return len((text or "").split())


def shard_data_counts(rows: list[dict], rejected: list[dict]) -> dict:
    """Mergeable counts of one shard's published rows and rejected pairs: histograms keyed by strings, overall
    (``regions_per_image``, ``region_caption_words``) and per question type under ``by_type``
    (``answers_kept``, ``answers_generated``, ``question_words``, ``rejected_by_reason``)."""
    c: defaultdict[str, Counter] = defaultdict(Counter)
    by_type: defaultdict[str, defaultdict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for row in rows:
        c["regions_per_image"][str(len(row["regions"]))] += 1
        for r in row["regions"]:
            c["region_caption_words"][str(_words(r["caption"]))] += 1
        for qa in row["qa"]:
            t, a = by_type[qa["type"]], normalize_answer(qa["answer"] or "")
            t["answers_kept"][a] += 1
            t["answers_generated"][a] += 1
            t["question_words"][str(_words(qa["question"]))] += 1
    for r in rejected:
        t = by_type[r["type"]]
        t["rejected_by_reason"][r["reason"]] += 1
        if r["answer"]:
            t["answers_generated"][normalize_answer(r["answer"])] += 1
    out: dict = {k: dict(v) for k, v in c.items()}
    out["by_type"] = {t: {k: dict(v) for k, v in h.items()} for t, h in by_type.items()}
    return out


def _distribution(hist: Counter) -> dict:
    """mean / median / max of a histogram {value: count} (zeros when empty)."""
    values = sorted((int(v), n) for v, n in hist.items() if n)
    total = sum(n for _, n in values)
    if not total:
        return {"mean": 0.0, "median": 0.0, "max": 0}

    def nth(k: int) -> int:  # the k-th smallest value (0-based), walking the histogram
        for v, n in values:
            if k < n:
                return v
            k -= n
        raise IndexError(k)

    return {
        "mean": sum(v * n for v, n in values) / total,
        "median": (nth((total - 1) // 2) + nth(total // 2)) / 2,
        "max": values[-1][0],
    }


def _yes_share(answers: Counter) -> float | None:
    yes, no = answers.get("yes", 0), answers.get("no", 0)
    return yes / (yes + no) if yes + no else None


def data_stats(data: dict, stats: dict, top: int = 10) -> dict:
    """Summaries of the merged counts: rates by reason, and per type the rejections by reason, answer
    distribution (distinct answers, the most frequent, yes/no balance of kept and of all answered pairs)
    and question length in words."""
    generated = stats["questions_generated"]
    out: dict = {
        "reject_rate_by_reason": {r: n / generated for r, n in stats["rejected_by_reason"].items()}
        if generated
        else {}
    }
    words_all: Counter = Counter()
    by_type = {t: dict(v) for t, v in stats["by_type"].items()}
    for t, b in by_type.items():
        h = data.get("by_type", {}).get(t, {})
        kept = Counter(h.get("answers_kept", {}))
        b["rejected_by_reason"] = dict(sorted(h.get("rejected_by_reason", {}).items()))
        b["answers_distinct"] = len(kept)
        b["top_answers"] = [[a, n] for a, n in sorted(kept.items(), key=lambda x: (-x[1], x[0]))[:top]]
        b["question_words"] = _distribution(Counter(h.get("question_words", {})))
        words_all.update(h.get("question_words", {}))
        if t == "yes/no":
            b["yes_share_kept"] = _yes_share(kept)
            b["yes_share_generated"] = _yes_share(Counter(h.get("answers_generated", {})))
    out["by_type"] = by_type
    out["question_words"] = _distribution(words_all)
    hist = data.get("regions_per_image", {})
    out["regions_per_image_hist"] = {k: hist[k] for k in sorted(hist, key=int)}
    out["region_caption_words"] = _distribution(Counter(data.get("region_caption_words", {})))
    return out
