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
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from datasets import Features, Image, List, Value

from jade.formats.run_tables import load_images
from jade.formats.samples import ShardRef
from jade.models import factory
from jade.models.vqa_normalize import normalize_answer
from jade.pipeline.config import QUESTION_TYPES, Manifest, StageResources
from jade.pipeline.rundir import RunDir, atomic_write_bytes, atomic_write_json, fingerprint
from jade.pipeline.stage import Context, Runtime, ShardResult
from jade.pipeline.stats import ratio, sum_counts

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
        ),
        "regions": List(
            {"bbox": List(Value("float32"), length=4), "caption": Value("string"), "score": Value("float32")}
        ),
        "provenance": {
            "generator": Value("string"),
            "filter": Value("string"),
            "config": Value("string"),
            "seed": Value("int64"),
            "source_shard": Value("string"),
            "source_key": Value("string"),  # the sample's key in its source (img2dataset's key)
            "generator_attention": Value("string"),
            "filter_attention": Value("string"),
        },
    }
)


_PART = "[0-9]" * 5  # a file is train-<shard>-<part>-of-<parts>.parquet, both 5 digits
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


def features(embed_images: bool) -> Features:
    if embed_images:
        return FEATURES
    return Features({k: v for k, v in FEATURES.items() if k != "image"})


@dataclass(frozen=True)
class PublishSettings:
    embed_images: bool
    rows_per_file: int
    seed: int


class Publisher:
    def __init__(self, run: RunDir, settings: PublishSettings, runtime: Runtime):
        self.run, self.s = run, settings
        self.schema = features(settings.embed_images).arrow_schema
        fps = dict(runtime.run_fingerprints)
        self.provenance = {
            "generator": fps["finetune_generator"],
            "filter": fps["finetune_filter"],
            "config": fingerprint([fps[k] for k in ("finetune_generator", "finetune_filter", "publish")]),
            "seed": settings.seed,
            "generator_attention": factory.read_meta(run.checkpoint("generator")).get("attention", "prefix"),
            "filter_attention": factory.read_meta(run.checkpoint("filter")).get("attention", "prefix"),
        }

    def __call__(self, shard: ShardRef) -> ShardResult:
        sid = shard.shard_id
        samples = pq.read_table(self.run.work("dedupe") / f"{sid}.parquet").to_pylist()
        filtered = {
            r["key"]: r for r in pq.read_table(self.run.work("filter") / f"{sid}.parquet").to_pylist()
        }
        raw = (
            {k: b for k, _, b in load_images(shard, {s["key"] for s in samples})}
            if self.s.embed_images
            else {}
        )
        rows = []
        for s in samples:
            f = filtered.get(s["key"], {"qa": [], "regions": []})
            prov = {**self.provenance, "source_shard": sid, "source_key": s["source_key"]}
            row = {k: s[k] for k in ("key", "url", "caption", "width", "height")}
            row.update(qa=f["qa"], regions=f["regions"], provenance=prov)
            if self.s.embed_images:
                row["image"] = {"bytes": raw[s["key"]], "path": None}
            rows.append(row)
        per = max(1, self.s.rows_per_file)
        # no file at all for a shard with no usable image: a 0-row file breaks loading
        parts = -(-len(rows) // per)
        tables = {
            f"dataset/data/train-{sid}-{p:05d}-of-{parts:05d}.parquet": pa.Table.from_pylist(
                rows[p * per : (p + 1) * per], schema=self.schema
            )
            for p in range(parts)
        }
        rejected = pq.read_table(self.run.rejected / f"{sid}.parquet", columns=["type", "reason", "answer"])
        counts = {"images_published": len(rows), "data": shard_data_counts(rows, rejected.to_pylist())}
        return ShardResult(tables, counts, len(rows), {"files": parts})


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
    data = {k: Counter(v) for k, v in s.get("data", {}).items()}
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

    return {
        "mean": sum(v * n for v, n in values) / total,
        "median": (nth((total - 1) // 2) + nth(total // 2)) / 2,
        "max": values[-1][0],
    }


def _yes_share(answers: Counter) -> float | None:
    yes, no = answers.get("yes", 0), answers.get("no", 0)
    return yes / (yes + no) if yes + no else None


def data_stats(data: dict[str, Counter], stats: dict, top: int = 10) -> dict:
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
    after = ("filter", "finetune_generator", "finetune_filter")
    version = 3  # 3: provenance carries the source key and the attention rules; no file for an empty shard

    def settings(self, m: Manifest) -> PublishSettings:
        return PublishSettings(m.publish.embed_images, m.publish.rows_per_file, m.seed)

    def resources(self, m: Manifest) -> StageResources:
        return m.resources.ingest

    def owns(self, shard_id: str) -> list[str]:
        # exact: "train-a-*" would also match the files of a shard named "a-00000"
        return [f"dataset/data/train-{shard_id}-{_PART}-of-{_PART}.parquet"]

    def worker(self, run: RunDir, settings: PublishSettings, runtime: Runtime) -> Publisher:
        return Publisher(run, settings, runtime)

    def finish(self, ctx: Context, published: list[str]) -> dict:
        """stats.json and the dataset card, over the shards published now."""
        m, run = ctx.manifest, ctx.run
        records: dict[str, list[dict]] = {  # aligned with `published`: each has a record of every stage
            st: [_record(run, st, ctx.shard_fps[st][s], s) for s in published]
            for st in ("ingest", "dedupe", "generate", "filter", "publish")
        }
        stats = merge_stats(records)
        if ctx.failed_shards:
            stats["failed_shards"] = ctx.failed_shards
        empty = empty_shards(published, records)
        if empty:
            stats["empty_shards"] = empty
        atomic_write_json(run.stats_json, stats)
        prov = {"generator": ctx.fp("finetune_generator"), "filter": ctx.fp("finetune_filter")}
        files = data_files(run, [p for s in published for p in self.owns(s)], records["publish"], published)
        card = dataset_card(m, stats, prov, features(m.publish.embed_images), files)
        atomic_write_bytes(run.dataset / "README.md", card.encode())
        return stats


def _record(run: RunDir, stage: str, fp: str, shard: str) -> dict:
    rec = run.done(stage, fp, shard)
    if rec is None:
        raise RuntimeError(f"publish: shard {shard} has no current {stage} record")
    return rec


def empty_shards(published: list[str], records: dict[str, list[dict]]) -> dict[str, dict]:
    """The published shards in which no image was usable (no data file), with what became of their images:
    {shard: {"images_in": n, "failure_reasons": {reason: n}}}."""
    out = {}
    for i, s in enumerate(published):
        if records["publish"][i]["images"]:
            continue
        reasons: Counter = Counter()
        for st in ("ingest", "dedupe"):
            reasons.update(records[st][i]["counts"].get("failure_reasons", {}))
        out[s] = {
            "images_in": records["ingest"][i]["counts"].get("images_in", 0),
            "failure_reasons": dict(sorted(reasons.items())),
        }
    return out


@dataclass(frozen=True)
class DataFiles:
    """The published data files, as the card lists them: names relative to dataset/, rows, bytes on disk,
    uncompressed bytes (from the Parquet footers) and a fingerprint of their content."""

    names: list[str]
    num_examples: int
    download_size: int
    num_bytes: int
    fingerprint: str


def data_files(run: RunDir, globs: list[str], publish_records: list[dict], published: list[str]) -> DataFiles:
    paths = sorted({p for g in globs for p in run.root.glob(g) if p.is_file()})
    meta = [pq.read_metadata(p) for p in paths]
    return DataFiles(
        names=[str(p.relative_to(run.dataset)) for p in paths],
        num_examples=sum(md.num_rows for md in meta),
        download_size=sum(p.stat().st_size for p in paths),
        num_bytes=sum(md.row_group(i).total_byte_size for md in meta for i in range(md.num_row_groups)),
        # each shard's record fingerprints the bytes of the files it wrote (pipeline.shardmap)
        fingerprint=fingerprint(
            sorted((s, r["output_fp"]) for s, r in zip(published, publish_records, strict=True))
        ),
    )


def dataset_card(m: Manifest, stats: dict, prov: dict, feats: Features, files: DataFiles) -> str:
    """The card. Its YAML header is what `datasets` hashes into the cache path of `load_dataset(DIR)` (every
    run's folder is named `dataset`): it lists the data files and carries their rows, sizes and content
    fingerprint, so a run, a re-run or a refilter with other data never reads another one's cache entry.
    `num_examples` is exact (datasets verifies it when it builds the split); `num_bytes` is the uncompressed
    size from the Parquet footers (datasets recomputes the Arrow size)."""
    header = {
        "configs": [
            {
                "config_name": "default",
                # no file at all (no usable image anywhere): the glob, so that datasets says "no data files"
                "data_files": [{"split": "train", "path": files.names or "data/train-*.parquet"}],
                "description": f"JADE Factory run {m.name}: {files.num_examples} rows in {len(files.names)} files, "
                f"data fingerprint {files.fingerprint}",
            }
        ],
        "dataset_info": {
            "features": feats._to_yaml_list(),
            "splits": [{"name": "train", "num_bytes": files.num_bytes, "num_examples": files.num_examples}],
            "download_size": files.download_size,
            "dataset_size": files.num_bytes,
        },
        "task_categories": ["visual-question-answering", "image-to-text"],
        "tags": ["synthetic", "jade-factory", "dense-captioning"],
    }
    g = m.generate
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).rstrip(),
        "---",
        "",
        f"# {m.name}: JADE Factory synthetic VQA and dense captions",
        "",
        "Generated by JADE Factory (the method of *Enhancing Vision-Language Pre-Training with Jointly Learned "
        "Questioner and Dense Captioner*, arXiv 2305.11769): a generator model fine-tuned on Visual Genome and "
        "GQA wrote dense captions and questions by top-K sampling and answers by greedy decoding; an independent "
        "filter model fine-tuned on VQA v2 answered every question, and a pair was kept only when both answers "
        "agree after answer normalization (the filter rule is under Settings).",
        "",
        "## Models",
        "",
        f"- generator: `{m.models.generator.base or 'from scratch (' + m.models.family + ')'}`, checkpoint fingerprint `{prov['generator']}`",
        f"- filter: `{m.models.filter.base or 'from scratch (' + m.models.family + ')'}`, checkpoint fingerprint `{prov['filter']}`",
        "",
        "## Settings",
        "",
        f"- seed {m.seed}; backend `{g.backend}`; top-K {g.top_k}, temperature {g.temperature}",
        f"- dense-caption samples per image: {g.captions} (near-duplicate boxes above IoU {g.box_dedup_iou} removed)",
        f"- question samples per image by type: {json.dumps({t: g.questions[t] for t in QUESTION_TYPES if t in g.questions})}",
        f"- filter: normalization `{m.filter.normalization}`, match `{m.filter.match}`, min score {m.filter.min_score}",
        "",
        "## Columns",
        "",
        "`key`, `image`, `url`, `caption` (original alt-text), `width`, `height`, `qa` (kept pairs: question, "
        "answer, type, filter_answer, score = the filter's answer probability), `regions` (bbox as x0 y0 x1 y1 "
        "fractions of width/height, caption, score = the caption's mean token probability), `provenance`.",
        "",
        *data_card(stats),
        "## Stats",
        "",
        "```json",
        json.dumps(stats, indent=2, sort_keys=True),
        "```",
        "",
        "## Files",
        "",
        f"{files.num_examples} rows in {len(files.names)} Parquet files under `data/` ({files.download_size} bytes), "
        f"data fingerprint `{files.fingerprint}`"
        + (
            ". Shards with no usable image (no file): " + ", ".join(f"`{s}`" for s in stats["empty_shards"])
            if stats.get("empty_shards")
            else ""
        )
        + ".",
        "",
        "Rejected pairs (with both answers and the reason) are in `../rejected/`, unusable inputs in `../failures/`.",
    ]
    return "\n".join(lines) + "\n"


def data_card(stats: dict) -> list[str]:
    """The dataset card's "Data statistics" section (markdown lines) from stats.json."""

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.1f}%"

    reasons = list(stats["rejected_by_reason"])
    lines = [
        "## Data statistics",
        "",
        "| type | generated | kept | keep rate | "
        + " | ".join(f"rejected: {r}" for r in reasons)
        + " | question words (mean) | distinct answers | most frequent kept answers |",
        "|---" * (7 + len(reasons)) + "|",
    ]
    for t, b in stats["by_type"].items():
        top = ", ".join(f"{a.replace('|', '/') or '(empty)'} ({n})" for a, n in b["top_answers"][:5])
        cells = [
            t,
            b["questions_generated"],
            b["qa_kept"],
            pct(b["keep_rate"] if b["questions_generated"] else None),
            *(b["rejected_by_reason"].get(r, 0) for r in reasons),
            f"{b['question_words']['mean']:.1f}",
            b["answers_distinct"],
            top,
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    cells = [
        "all",
        stats["questions_generated"],
        stats["qa_kept"],
        pct(stats["keep_rate"]),
        *(stats["rejected_by_reason"][r] for r in reasons),
        f"{stats['question_words']['mean']:.1f}",
        "",
        "",
    ]
    lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    yn, qw, rc = stats["by_type"].get("yes/no", {}), stats["question_words"], stats["region_caption_words"]
    hist = ", ".join(f"{k}: {v}" for k, v in stats["regions_per_image_hist"].items())
    lines += [
        "",
        f'- yes/no balance: {pct(yn.get("yes_share_kept"))} "yes" among kept yes/no pairs '
        f"({pct(yn.get('yes_share_generated'))} among all answered yes/no pairs)",
        "- rejected, as a share of generated questions: "
        + (", ".join(f"{r} {pct(v)}" for r, v in stats["reject_rate_by_reason"].items()) or "none"),
        f"- kept questions: {qw['mean']:.1f} words on average (median {qw['median']:g}, longest {qw['max']})",
        f"- regions per image: {stats['regions_per_image']:.2f} on average; images by number of regions: {hist}",
        f"- region captions: {rc['mean']:.1f} words on average (longest {rc['max']})",
        "",
    ]
    return lines
