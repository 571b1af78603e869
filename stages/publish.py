"""Publish: dataset/ in Hugging Face layout (data/train-*.parquet + a dataset card), and stats.json.

stats.json holds the counts of section 7 and, for any run (no truth needed), what the data looks like:
rejections by reason and type, answer distributions per type (yes/no balance, most frequent answers),
question length, regions per image. They are counted per shard into its completion record and merged, like
every other count, and shown in the dataset card.

Each Parquet file carries the `huggingface` schema metadata, so `image` decodes to a PIL image under both
`load_dataset(dir)` and `load_dataset("parquet", data_files=...)`. Files are written per input shard and
committed like every other output (temporary name, rename, completion record last).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from datasets import Features, Image, List, Value

from jade.formats import shards
from jade.models import factory
from jade.models.vqa_normalize import normalize_answer
from jade.pipeline.config import QUESTION_TYPES, Manifest
from jade.pipeline.rundir import (
    RunDir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    read_json,
)
from jade.pipeline.shard_stage import load_images, run_shard_stage
from jade.pipeline.stage import Context

FEATURES = Features(
    {
        "key": Value("string"),
        "image": Image(),
        "url": Value("string"),
        "caption": Value("string"),
        "width": Value("int32"),
        "height": Value("int32"),
        "qa": List(
            {
                "question": Value("string"),
                "answer": Value("string"),
                "type": Value("string"),
                "filter_answer": Value("string"),
                "score": Value("float32"),
            }
        ),  # fmt: skip
        "regions": List(
            {"bbox": List(Value("float32"), length=4), "caption": Value("string"), "score": Value("float32")}
        ),  # fmt: skip
        "provenance": {
            "generator": Value("string"),
            "filter": Value("string"),
            "config": Value("string"),
            "seed": Value("int64"),
            "source_shard": Value("string"),
        },  # fmt: skip
    }
)


def features(embed_images: bool) -> Features:
    if embed_images:
        return FEATURES
    return Features({k: v for k, v in FEATURES.items() if k != "image"})


class Publisher:
    def __init__(self, run_root: str, fp: str, settings: dict, batch_size: int, threads: int):
        self.run, self.fp, self.s = RunDir(run_root), fp, settings
        self.features = features(settings["embed_images"])
        self.schema = self.features.arrow_schema

    def __call__(self, item: dict) -> dict:
        shard = shards.ShardRef(**item["shard"])
        if rec := self.run.done("publish", self.fp, shard.shard_id):
            return rec
        samples = pq.read_table(self.run.work("ingest") / "samples" / f"{shard.shard_id}.parquet").to_pylist()
        filtered = {
            r["key"]: r
            for r in pq.read_table(self.run.work("filter") / f"{shard.shard_id}.parquet").to_pylist()
        }
        raw = {}
        if self.s["embed_images"]:
            raw = {k: b for k, _, b in load_images(shard, {s["key"] for s in samples})}
        prov = {**self.s["provenance"], "source_shard": shard.shard_id}
        rows = []
        for s in samples:
            f = filtered.get(s["key"], {"qa": [], "regions": []})
            row = {**s, "qa": f["qa"], "regions": f["regions"], "provenance": prov}
            if self.s["embed_images"]:
                row["image"] = {"bytes": raw[s["key"]], "path": None}
            rows.append(row)
        out = self.run.dataset / "data"
        per = max(1, self.s["rows_per_file"])
        parts = max(1, -(-len(rows) // per))
        for old in out.glob(f"train-{shard.shard_id}-*.parquet"):
            old.unlink()
        for p in range(parts):
            table = pa.Table.from_pylist(rows[p * per : (p + 1) * per], schema=self.schema)
            atomic_write_parquet(out / f"train-{shard.shard_id}-{p:05d}-of-{parts:05d}.parquet", table)
        rejected = pq.read_table(
            self.run.rejected / f"{shard.shard_id}.parquet", columns=["type", "reason", "answer"]
        )
        rec = {"shard": shard.shard_id, "rows": len(rows), "files": parts,
               "data": shard_data_counts(rows, rejected.to_pylist())}  # fmt: skip
        self.run.mark_done("publish", self.fp, rec, shard.shard_id)
        return rec


def merge_stats(run: RunDir, fps: dict[str, str], failed: dict[str, dict] | None = None) -> dict:
    """stats.json from the per-shard completion records (so it survives restarts and adds up); the shards in
    `failed` (not published) are left out of the counts and listed under `failed_shards`."""
    total: Counter = Counter()
    failure_reasons: Counter = Counter()
    converted_from: Counter = Counter()
    for stage in ("ingest", "generate", "filter"):
        for rec_path in sorted((run.state / stage).glob("*.json")):
            rec = read_json(rec_path)
            if rec_path.name == "_stage.json" or not rec or rec.get("fingerprint") != fps[stage]:
                continue
            if rec_path.stem in (failed or {}):
                continue
            total.update({k: v for k, v in rec.items() if isinstance(v, int) and not isinstance(v, bool)
                          and k not in ("images",)})  # fmt: skip
            if stage == "ingest":  # image shards: why samples failed, which modes were converted to RGB
                failure_reasons.update(rec.get("failure_reasons", {}))
                converted_from.update(rec.get("converted_from", {}))
    stats = {k: total.get(k, 0) for k in ("images_in", "images_ok", "images_failed", "questions_generated",
                                           "qa_kept", "qa_rejected", "regions_generated", "regions_kept")}  # fmt: skip
    stats["keep_rate"] = (
        stats["qa_kept"] / stats["questions_generated"] if stats["questions_generated"] else 0.0
    )
    stats["kept_per_image"] = stats["qa_kept"] / stats["images_ok"] if stats["images_ok"] else 0.0
    stats["regions_per_image"] = stats["regions_kept"] / stats["images_ok"] if stats["images_ok"] else 0.0
    stats["by_type"] = {}
    for t in QUESTION_TYPES:
        g, k, r = (total.get(f"{n}.{t}", 0) for n in ("questions_generated", "qa_kept", "qa_rejected"))
        stats["by_type"][t] = {
            "questions_generated": g,
            "qa_kept": k,
            "qa_rejected": r,
            "keep_rate": k / g if g else 0.0,
        }
    stats["rejected_by_reason"] = {
        k.split(".", 1)[1]: v for k, v in sorted(total.items()) if k.startswith("rejected_reason.")
    }
    stats["images_converted"] = total.get("images_converted", 0)
    stats["failure_reasons"] = dict(sorted(failure_reasons.items()))
    stats["converted_from"] = dict(sorted(converted_from.items()))
    stats["regions_malformed"] = total.get("regions_malformed", 0)
    stats["regions_duplicate"] = total.get("regions_duplicate", 0)
    data: dict[str, Counter] = defaultdict(Counter)
    for rec_path in sorted((run.state / "publish").glob("*.json")):
        rec = read_json(rec_path)
        if rec_path.name != "_stage.json" and rec and rec.get("fingerprint") == fps["publish"]:
            for k, v in rec.get("data", {}).items():
                data[k].update(v)
    return {**stats, **data_stats(data, stats)}


# ------------------------------------------------------------------------------------ what the data looks like
def _words(text: str | None) -> int:
    return len((text or "").split())


def shard_data_counts(rows: list[dict], rejected: list[dict]) -> dict[str, dict[str, int]]:
    """Mergeable counts of one shard's published rows and rejected pairs (histograms keyed by strings)."""
    c: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        c["regions_per_image"][str(len(row["regions"]))] += 1
        for r in row["regions"]:
            c["region_caption_words"][str(_words(r["caption"]))] += 1
        for qa in row["qa"]:
            t, a = qa["type"], normalize_answer(qa["answer"] or "")
            c[f"answers_kept.{t}"][a] += 1
            c[f"answers_generated.{t}"][a] += 1
            c[f"question_words.{t}"][str(_words(qa["question"]))] += 1
    for r in rejected:
        c[f"rejected_by_reason.{r['type']}"][r["reason"]] += 1
        if r["answer"]:
            c[f"answers_generated.{r['type']}"][normalize_answer(r["answer"])] += 1
    return {k: dict(v) for k, v in c.items()}


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

    return {"mean": sum(v * n for v, n in values) / total, "median": (nth((total - 1) // 2) + nth(total // 2)) / 2,
            "max": values[-1][0]}  # fmt: skip


def _yes_share(answers: Counter) -> float | None:
    yes, no = answers.get("yes", 0), answers.get("no", 0)
    return yes / (yes + no) if yes + no else None


def data_stats(data: dict[str, Counter], stats: dict, top: int = 10) -> dict:
    """Summaries of the merged counts: rates by reason, and per type the rejections by reason, answer
    distribution (distinct answers, the most frequent, yes/no balance of kept and of all answered pairs)
    and question length in words."""
    generated = stats["questions_generated"]
    out: dict = {"reject_rate_by_reason": {r: n / generated for r, n in stats["rejected_by_reason"].items()}
                 if generated else {}}  # fmt: skip
    words_all: Counter = Counter()
    by_type = {t: dict(v) for t, v in stats["by_type"].items()}
    for t, b in by_type.items():
        kept = data.get(f"answers_kept.{t}", Counter())
        b["rejected_by_reason"] = dict(sorted(data.get(f"rejected_by_reason.{t}", Counter()).items()))
        b["answers_distinct"] = len(kept)
        b["top_answers"] = [[a, n] for a, n in sorted(kept.items(), key=lambda x: (-x[1], x[0]))[:top]]
        b["question_words"] = _distribution(data.get(f"question_words.{t}", Counter()))
        words_all.update(data.get(f"question_words.{t}", Counter()))
        if t == "yes/no":
            b["yes_share_kept"] = _yes_share(kept)
            b["yes_share_generated"] = _yes_share(data.get(f"answers_generated.{t}", Counter()))
    out["by_type"] = by_type
    out["question_words"] = _distribution(words_all)
    hist = data.get("regions_per_image", Counter())
    out["regions_per_image_hist"] = {k: hist[k] for k in sorted(hist, key=int)}
    out["region_caption_words"] = _distribution(data.get("region_caption_words", Counter()))
    return out


class Publish:
    name = "publish"
    after = ("filter",)
    version = 2  # 2: data statistics in the shard records, stats.json and the card

    def settings(self, m: Manifest) -> dict:
        return {"embed_images": m.publish.embed_images, "rows_per_file": m.publish.rows_per_file}

    def run(self, ctx: Context) -> dict:
        m, run = ctx.manifest, ctx.run
        settings = {**self.settings(m), "provenance": {
            "generator": factory.read_meta(run.checkpoint("generator")).get("fingerprint", ""),
            "filter": factory.read_meta(run.checkpoint("filter")).get("fingerprint", ""),
            "config": ctx.fp("filter"), "seed": m.seed}}  # fmt: skip
        summary = run_shard_stage(ctx, self.name, Publisher, settings, m.resources.ingest)
        stats = merge_stats(run, ctx.fingerprints, ctx.failed_shards)
        if ctx.failed_shards:
            stats["failed_shards"] = ctx.failed_shards
        atomic_write_json(run.stats_json, stats)
        atomic_write_bytes(
            run.dataset / "README.md",
            dataset_card(m, stats, settings, features(m.publish.embed_images)).encode(),
        )
        return {**summary, "stats": stats}


def dataset_card(m: Manifest, stats: dict, settings: dict, feats: Features) -> str:
    header = {
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}
        ],
        "dataset_info": {"features": feats._to_yaml_list()},
        "task_categories": ["visual-question-answering", "image-to-text"],
        "tags": ["synthetic", "jade-factory", "dense-captioning"],
    }
    g = m.generate
    prov = settings["provenance"]
    lines = [
        "---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", "",
        f"# {m.name}: JADE Factory synthetic VQA and dense captions", "",
        "Generated by JADE Factory (the method of *Enhancing Vision-Language Pre-Training with Jointly Learned "
        "Questioner and Dense Captioner*, arXiv 2305.11769): a generator model fine-tuned on Visual Genome and "
        "GQA wrote dense captions and questions by top-K sampling and answers by greedy decoding; an independent "
        "filter model fine-tuned on VQA v2 answered every question, and a pair was kept only when both answers "
        "agree after answer normalization (the filter rule is under Settings).", "",
        "## Models", "",
        f"- generator: `{m.models.generator.base or 'from scratch (' + m.models.family + ')'}`, checkpoint fingerprint `{prov['generator']}`",
        f"- filter: `{m.models.filter.base or 'from scratch (' + m.models.family + ')'}`, checkpoint fingerprint `{prov['filter']}`", "",
        "## Settings", "",
        f"- seed {m.seed}; backend `{g.backend}`; top-K {g.top_k}, temperature {g.temperature}",
        f"- dense-caption samples per image: {g.captions} (near-duplicate boxes above IoU {g.box_dedup_iou} removed)",
        f"- question samples per image by type: {json.dumps({t: g.questions[t] for t in QUESTION_TYPES if t in g.questions})}",
        f"- filter: normalization `{m.filter.normalization}`, match `{m.filter.match}`, min score {m.filter.min_score}", "",
        "## Columns", "",
        "`key`, `image`, `url`, `caption` (original alt-text), `width`, `height`, `qa` (kept pairs: question, "
        "answer, type, filter_answer, score = the filter's answer probability), `regions` (bbox as x0 y0 x1 y1 "
        "fractions of width/height, caption, score = the caption's mean token probability), `provenance`.", "",
        *data_card(stats),
        "## Stats", "", "```json", json.dumps(stats, indent=2, sort_keys=True), "```", "",
        "Rejected pairs (with both answers and the reason) are in `../rejected/`, unusable inputs in `../failures/`.",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def data_card(stats: dict) -> list[str]:
    """The dataset card's "Data statistics" section (markdown lines) from stats.json."""

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    reasons = list(stats["rejected_by_reason"])
    lines = ["## Data statistics", "",
             "| type | generated | kept | keep rate | " + " | ".join(f"rejected: {r}" for r in reasons)
             + " | question words (mean) | distinct answers | most frequent kept answers |",
             "|---" * (7 + len(reasons)) + "|"]  # fmt: skip
    for t, b in stats["by_type"].items():
        top = ", ".join(f"{a.replace('|', '/') or '(empty)'} ({n})" for a, n in b["top_answers"][:5])
        cells = [t, b["questions_generated"], b["qa_kept"], pct(b["keep_rate"] if b["questions_generated"] else None),
                 *(b["rejected_by_reason"].get(r, 0) for r in reasons), f"{b['question_words']['mean']:.1f}",
                 b["answers_distinct"], top]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    cells = ["all", stats["questions_generated"], stats["qa_kept"], pct(stats["keep_rate"]),
             *(stats["rejected_by_reason"][r] for r in reasons), f"{stats['question_words']['mean']:.1f}", "", ""]  # fmt: skip
    lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    yn, qw, rc = stats["by_type"].get("yes/no", {}), stats["question_words"], stats["region_caption_words"]
    hist = ", ".join(f"{k}: {v}" for k, v in stats["regions_per_image_hist"].items())
    lines += ["",
              f"- yes/no balance: {pct(yn.get('yes_share_kept'))} \"yes\" among kept yes/no pairs "
              f"({pct(yn.get('yes_share_generated'))} among all answered yes/no pairs)",
              "- rejected, as a share of generated questions: "
              + (", ".join(f"{r} {pct(v)}" for r, v in stats["reject_rate_by_reason"].items()) or "none"),
              f"- kept questions: {qw['mean']:.1f} words on average (median {qw['median']:g}, longest {qw['max']})",
              f"- regions per image: {stats['regions_per_image']:.2f} on average; images by number of regions: {hist}",
              f"- region captions: {rc['mean']:.1f} words on average (longest {rc['max']})", ""]  # fmt: skip
    return lines
