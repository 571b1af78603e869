"""A tiny finished run for the paper table's tests: a small sample world (VQA v2 train and val), and a published
dataset of its CC3M-like images with true QA pairs and region captions from the truth (the subject is the
table's bookkeeping and statistics, not the factory), plus one rejected pair an image."""

from __future__ import annotations

import io
import json
import random
import tarfile
from pathlib import Path

import datasets
from PIL import Image

from jade.sampleworld import WorldConfig, region_phrases, sample_questions, write_world

WORLD = dict(vg_images=2, gqa_images=2, vqa_train_images=20, vqa_val_images=6, cc3m_images=24, cc3m_shards=1)


def make_paper_run(run: Path, seed: int = 0) -> Path:
    world = run / "world"
    write_world(world, WorldConfig(seed=seed, **WORLD))
    truth = json.loads((world / "truth" / "cc3m_scene_graphs.json").read_text())
    rows = {k: [] for k in ("key", "image", "url", "caption", "width", "height", "qa", "regions")}
    rejected = {"key": [], "question": [], "answer": []}
    with tarfile.open(world / "cc3m" / "00000.tar") as tar:
        members = {m.name: m for m in tar}
        for key, graph in sorted(truth.items()):
            rng = random.Random(key)
            img = Image.open(io.BytesIO(tar.extractfile(members[f"{key}.jpg"]).read())).convert("RGB")
            meta = json.loads(tar.extractfile(members[f"{key}.json"]).read())
            qa = [
                {"question": q, "answer": a, "type": t, "filter_answer": a, "score": 1.0}
                for q, a, t in sample_questions(graph, rng, 4)
            ]
            regions = [
                {
                    "bbox": [o["x"] / 128, o["y"] / 128, (o["x"] + o["w"]) / 128, (o["y"] + o["h"]) / 128],
                    "caption": region_phrases(o, rng)[0],
                    "score": 1.0,
                }
                for o in graph["objects"].values()
            ]
            for k, v in zip(
                rows, (key, img, meta["url"], meta["caption"], 128, 128, qa, regions), strict=True
            ):
                rows[k].append(v)
            rejected["key"].append(key), rejected["question"].append("Is there a circle?")
            rejected["answer"].append(rng.choice(["yes", "no"]))
    (run / "dataset" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).to_parquet(
        str(run / "dataset" / "data" / "train-00000-00000-of-00001.parquet")
    )
    (run / "rejected").mkdir()
    datasets.Dataset.from_dict(rejected).to_parquet(str(run / "rejected" / "00000.parquet"))
    vqa = {
        "questions": str(world / "vqa" / "v2_OpenEnded_mscoco_train2014_questions.json"),
        "annotations": str(world / "vqa" / "v2_mscoco_train2014_annotations.json"),
        "images": str(world / "coco" / "train2014"),
    }
    (run / "run.json").write_text(json.dumps({"seed": seed, "manifest": {"sources": {"vqa": vqa}}}))
    return run
