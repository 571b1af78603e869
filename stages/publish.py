"""Publish: dataset/ in Hugging Face layout (data/train-*.parquet + a dataset card), and stats.json.

Each Parquet file carries the `huggingface` schema metadata, so `image` decodes to a PIL image under both
`load_dataset(dir)` and `load_dataset("parquet", data_files=...)`. Files are written per input shard and
committed like every other output (temporary name, rename, completion record last).
"""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from datasets import Features, Image, List, Value

from jade.formats import shards
from jade.models import factory
from jade.pipeline.config import QUESTION_TYPES, Manifest
from jade.pipeline.rundir import (
    RunDir,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    read_json,
)
from jade.pipeline.stage import Context
from jade.stages.generate import load_images, run_shard_stage

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
        rec = {"shard": shard.shard_id, "rows": len(rows), "files": parts}
        self.run.mark_done("publish", self.fp, rec, shard.shard_id)
        return rec


def merge_stats(run: RunDir, fps: dict[str, str]) -> dict:
    """stats.json from the per-shard completion records (so it survives restarts and adds up)."""
    total: Counter = Counter()
    for stage in ("ingest", "generate", "filter"):
        for rec_path in sorted((run.state / stage).glob("*.json")):
            rec = read_json(rec_path)
            if rec_path.name == "_stage.json" or not rec or rec.get("fingerprint") != fps[stage]:
                continue
            total.update({k: v for k, v in rec.items() if isinstance(v, int) and not isinstance(v, bool)
                          and k not in ("images",)})  # fmt: skip
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
    stats["regions_malformed"] = total.get("regions_malformed", 0)
    stats["regions_duplicate"] = total.get("regions_duplicate", 0)
    return stats


class Publish:
    name = "publish"
    after = ("filter",)

    def settings(self, m: Manifest) -> dict:
        return {"embed_images": m.publish.embed_images, "rows_per_file": m.publish.rows_per_file}

    def run(self, ctx: Context) -> dict:
        m, run = ctx.manifest, ctx.run
        settings = {**self.settings(m), "provenance": {
            "generator": factory.read_meta(run.checkpoint("generator")).get("fingerprint", ""),
            "filter": factory.read_meta(run.checkpoint("filter")).get("fingerprint", ""),
            "config": ctx.fp("filter"), "seed": m.seed}}  # fmt: skip
        summary = run_shard_stage(ctx, self.name, Publisher, settings, m.resources.ingest)
        stats = merge_stats(run, ctx.fingerprints)
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
        "agree exactly after VQA answer normalization.", "",
        "## Models", "",
        f"- generator: `{m.models.generator.base or 'from scratch (' + m.models.family + ')'}`, checkpoint fingerprint `{prov['generator']}`",
        f"- filter: `{m.models.filter.base or 'from scratch (' + m.models.family + ')'}`, checkpoint fingerprint `{prov['filter']}`", "",
        "## Settings", "",
        f"- seed {m.seed}; backend `{g.backend}`; top-K {g.top_k}, temperature {g.temperature}",
        f"- dense-caption samples per image: {g.captions} (near-duplicate boxes above IoU {g.box_dedup_iou} removed)",
        f"- question samples per image by type: {json.dumps(g.questions)}",
        f"- filter: normalization `{m.filter.normalization}`, match `{m.filter.match}`, min score {m.filter.min_score}", "",
        "## Columns", "",
        "`key`, `image`, `url`, `caption` (original alt-text), `width`, `height`, `qa` (kept pairs: question, "
        "answer, type, filter_answer, score = the filter's answer probability), `regions` (bbox as x0 y0 x1 y1 "
        "fractions of width/height, caption, score = the caption's mean token probability), `provenance`.", "",
        "## Stats", "", "```json", json.dumps(stats, indent=2, sort_keys=True), "```", "",
        "Rejected pairs (with both answers and the reason) are in `../rejected/`, unusable inputs in `../failures/`.",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"
