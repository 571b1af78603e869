"""`jade eval DIR`: measure a sample-world run's data against the hidden truth (never read by the pipeline).

Every generated pair (kept from dataset/, rejected from rejected/) is checked by the sample world's question
parser; questions it cannot parse or that are ill-posed count as unverifiable, never dropped. Every dense
caption is right when its box matches a true object at IoU >= 0.5 and its words name that object's true
attributes. Writes eval.json and eval.md.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from jade.models.tasks import iou
from jade.models.vqa_normalize import normalize_answer
from jade.pipeline.config import QUESTION_TYPES
from jade.pipeline.rundir import RunDir, atomic_write_bytes, atomic_write_json, read_json


def _truth_box(obj: dict, w: int, h: int) -> tuple[float, float, float, float]:
    return (obj["x"] / w, obj["y"] / h, (obj["x"] + obj["w"]) / w, (obj["y"] + obj["h"]) / h)


def _precision(c: Counter) -> float | None:
    n = c["right"] + c["wrong"]
    return c["right"] / n if n else None


def evaluate_run(run_dir: str | Path) -> dict:
    from jade.sampleworld.language import answer_question, caption_matches

    run = RunDir(run_dir)
    truth = read_json(run.world / "truth" / "cc3m_scene_graphs.json")
    if truth is None:
        raise SystemExit(
            f"jade eval: {run.world}/truth/cc3m_scene_graphs.json not found (sample-world runs only)"
        )
    counts: dict[str, Counter] = defaultdict(
        Counter
    )  # (kept|rejected|all)[.type] -> right/wrong/unverifiable
    regions, distinct, generated_images, total_q = Counter(), set(), 0, 0

    def check(key: str, question: str, answer: str, kept: bool, qtype: str) -> None:
        graph = truth.get(key)
        true = answer_question(question, graph) if graph else None
        verdict = (
            "unverifiable"
            if true is None
            else ("right" if normalize_answer(answer or "") == normalize_answer(true) else "wrong")
        )
        for group in ("all", "kept" if kept else "rejected"):
            counts[group][verdict] += 1
            counts[f"{group}.{qtype}"][verdict] += 1

    files = sorted((run.dataset / "data").glob("train-*.parquet"))
    images = kept = 0
    for f in files:
        for row in pq.read_table(f, columns=["key", "qa", "regions"]).to_pylist():
            images += 1
            graph = truth.get(row["key"]) or {"objects": {}, "width": 1, "height": 1}
            kept += len(row["qa"])
            for qa in row["qa"]:
                check(row["key"], qa["question"], qa["answer"], True, qa["type"])
            for r in row["regions"]:
                right = any(iou(tuple(r["bbox"]), _truth_box(o, graph["width"], graph["height"])) >= 0.5
                            and caption_matches(r["caption"], o) for o in graph["objects"].values())  # fmt: skip
                regions["right" if right else "wrong"] += 1
    for f in sorted(run.rejected.glob("*.parquet")):
        for row in pq.read_table(f).to_pylist():
            if row["reason"] == "duplicate question":
                continue  # a repeat of a question already counted
            check(row["key"], row["question"], row["answer"], False, row["type"])
    for f in sorted(run.work("generate").glob("*.parquet")):
        for row in pq.read_table(f, columns=["key", "qa"]).to_pylist():
            qs = [q["question"] for q in row["qa"]]
            generated_images += 1
            total_q += len(qs)
            distinct.update((row["key"], normalize_answer(q)) for q in qs)

    stats = read_json(run.stats_json) or {}
    unverifiable = counts["all"]["unverifiable"]
    report = {
        "qa_precision_all": _precision(counts["all"]),
        "qa_precision_kept": _precision(counts["kept"]),
        "qa_precision_rejected": _precision(counts["rejected"]),
        "qa_unverifiable": unverifiable / max(1, sum(counts["all"].values())),
        "keep_rate": stats.get("keep_rate"),
        "kept_per_image": kept / max(1, images),
        "questions_per_image": total_q / max(1, generated_images),
        "region_precision": _precision(regions),
        "regions_per_image": sum(regions.values()) / max(1, images),
        "distinct_question_ratio": len(distinct) / max(1, total_q),
        "images": images,
        "pairs_checked": {g: dict(counts[g]) for g in ("all", "kept", "rejected")},
        "by_type": {
            t: {
                "qa_precision_all": _precision(counts[f"all.{t}"]),
                "qa_precision_kept": _precision(counts[f"kept.{t}"]),
                "qa_precision_rejected": _precision(counts[f"rejected.{t}"]),
                "keep_rate": stats.get("by_type", {}).get(t, {}).get("keep_rate"),
                "counts": {g: dict(counts[f"{g}.{t}"]) for g in ("kept", "rejected")},
            }
            for t in QUESTION_TYPES
        },
    }
    atomic_write_json(run.root / "eval.json", report)
    atomic_write_bytes(run.root / "eval.md", markdown(report).encode())
    return report


def markdown(r: dict) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.3f}"

    lines = ["# Data quality (sample world, checked against the hidden truth)", "",
             "| type | precision all | precision kept | precision rejected | keep rate |", "|---|---|---|---|---|",
             f"| all | {f(r['qa_precision_all'])} | {f(r['qa_precision_kept'])} | {f(r['qa_precision_rejected'])} | {f(r['keep_rate'])} |"]  # fmt: skip
    for t, b in r["by_type"].items():
        lines.append(
            f"| {t} | {f(b['qa_precision_all'])} | {f(b['qa_precision_kept'])} | {f(b['qa_precision_rejected'])} | {f(b['keep_rate'])} |"
        )
    lines += ["", f"- unverifiable pairs: {f(r['qa_unverifiable'])}", f"- kept pairs per image: {f(r['kept_per_image'])}",
              f"- questions per image: {f(r['questions_per_image'])}", f"- distinct-question ratio: {f(r['distinct_question_ratio'])}",
              f"- dense-caption precision (IoU >= 0.5 and true attributes): {f(r['region_precision'])}",
              f"- regions per image: {f(r['regions_per_image'])}", ""]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(json.dumps(evaluate_run(sys.argv[1]), indent=2))
