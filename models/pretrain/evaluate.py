"""Downstream evaluation of a pretrained checkpoint:

- VQA accuracy with the official VQA v2 metric on held-out VQA v2 val questions, after a short, fixed
  fine-tune (same steps, batch, learning rate and seed for every checkpoint) on the VQA v2 train questions;
- with benchmarks (`pretrain.benchmarks`; `models.pretrain.downstream`): retrieval R@1/5/10 over the test
  images and their five clean captions each, captioning CIDEr-D against those references after a fixed
  fine-tune, and the region task's accuracy at IoU >= 0.5 after a fixed fine-tune;
- without: retrieval (R@1, R@5) and CIDEr-D on the held-out images of the dataset against their alt-text
  captions, the only references such a dataset has (noisy: see docs/pretraining.md).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from jade.models.greedy import greedy
from jade.models.pretrain import downstream
from jade.models.pretrain.base import PretrainData
from jade.models.pretrain.benchmarks import CaptionSet, load_captions, load_refs
from jade.models.pretrain.cider import cider_d
from jade.models.pretrain.config import PretrainConfig
from jade.models.pretrain.downstream import finetune_copy
from jade.models.pretrain.model import text_batch
from jade.models.pretrain.task_caption import PROMPT as CAPTION_PROMPT
from jade.models.tasks import answer_prompt
from jade.models.vqa_normalize import vqa_accuracy

log = logging.getLogger("jade")


@torch.inference_mode()
def retrieval(model, processor, data: PretrainData, bs: int = 64) -> dict:
    """R@1 / R@5 both ways; image i's own caption is the only correct text (and vice versa)."""
    if len(data) < 2:
        return {
            k: None for k in ("retrieval_i2t_r1", "retrieval_i2t_r5", "retrieval_t2i_r1", "retrieval_t2i_r5")
        }
    imgs, txts = [], []
    for s in range(0, len(data), bs):
        px = processor.image_processor(data.images[s : s + bs], return_tensors="pt")["pixel_values"]
        imgs.append(model.image_embed(px))
        txts.append(model.text_embed(**text_batch(processor.tokenizer, data.captions[s : s + bs], "cpu")))
    sim = torch.cat(imgs) @ torch.cat(txts).T
    truth = torch.arange(len(data))

    def recall(s: torch.Tensor, k: int) -> float:
        top = s.topk(min(k, s.shape[1]), dim=1).indices
        return (top == truth[:, None]).any(1).float().mean().item()

    return {
        "retrieval_i2t_r1": recall(sim, 1),
        "retrieval_i2t_r5": recall(sim, 5),
        "retrieval_t2i_r1": recall(sim.T, 1),
        "retrieval_t2i_r5": recall(sim.T, 5),
    }


def captioning(model, processor, data: PretrainData, attention: str) -> dict:
    if not len(data):
        return {"cider": None}
    preds = greedy(model.lm, processor, data.images, [CAPTION_PROMPT] * len(data), attention, max_new=16)
    score, _ = cider_d(preds, [[c] for c in data.captions])
    return {"cider": score, "caption_examples": list(zip(data.captions[:5], preds[:5], strict=True))}


def _vqa_items(questions: str, annotations: str, images: str, split: str, size: int) -> list[tuple]:
    qs = {q["question_id"]: q for q in json.loads(Path(questions).read_text())["questions"]}
    items, cache = [], {}
    for a in sorted(json.loads(Path(annotations).read_text())["annotations"], key=lambda a: a["question_id"]):
        q = qs[a["question_id"]]
        img = cache.get(q["image_id"])
        if img is None:
            with Image.open(Path(images) / f"COCO_{split}2014_{q['image_id']:012d}.jpg") as f:
                img = cache[q["image_id"]] = f.convert("RGB").resize((size, size))
        items.append((img, q["question"], a["multiple_choice_answer"], [x["answer"] for x in a["answers"]]))
    return items


def vqa(model, processor, cfg: PretrainConfig, files: dict, device: str = "cpu") -> dict:
    """Fine-tune a copy of the model on VQA v2 train (fixed budget), then answer held-out val questions."""
    size = cfg.arch.image_size
    train = _vqa_items(files["questions"], files["annotations"], files["images"], "train", size)
    val = _vqa_items(files["val_questions"], files["val_annotations"], files["val_images"], "val", size)
    val = val[: cfg.vqa_eval_questions]

    def draw(rng, n):
        pick = [train[i] for i in rng.choice(len(train), size=min(n, len(train)), replace=False)]
        return [p[0] for p in pick], [answer_prompt(p[1]) for p in pick], [p[2] for p in pick]

    ft = finetune_copy(
        model, processor, draw, cfg.vqa_steps, cfg.vqa_batch_size, cfg.vqa_lr, cfg.seed, cfg.attention, device
    )
    preds = greedy(
        ft.lm,
        processor,
        [v[0] for v in val],
        [answer_prompt(v[1]) for v in val],
        cfg.attention,
        6,
        64,
        device,
    )
    accs = [vqa_accuracy(p, v[3]) for p, v in zip(preds, val, strict=True)]
    return {
        "vqa_accuracy": float(np.mean(accs)) if accs else None,
        "vqa_questions": len(accs),
        "vqa_train_questions": len(train),
        "vqa_scores": accs,  # per question, in val order: paired comparisons and bootstraps over items
    }


def on_benchmarks(model, processor, cfg: PretrainConfig, device: str = "cpu") -> dict:
    """Retrieval, captioning and the region task on the benchmark folder ``cfg.benchmarks``."""
    size, ds, folder, seed, rule = (
        cfg.arch.image_size,
        cfg.downstream,
        cfg.benchmarks,
        cfg.seed,
        cfg.attention,
    )
    seconds, t0 = {}, time.time()
    test = load_captions(folder, "captest", size)
    cap_train = load_captions(folder, "captrain", size)
    report = downstream.retrieval(model, processor, test, device)
    if ds.retrieval_steps:  # the fine-tuned numbers are the table's; the zero-shot ones stay, renamed
        report = {k.replace("retrieval_", "retrieval_zs_", 1): v for k, v in report.items()}
        tuned = downstream.finetune_itc(
            model, processor, cap_train, ds.retrieval_steps, ds.batch_size, ds.lr, seed, device
        )
        report |= downstream.retrieval(tuned, processor, test, device)
        del tuned
    seconds["retrieval"], t0 = time.time() - t0, time.time()
    cap_test = CaptionSet(*(v[: ds.caption_images] for v in (test.image_ids, test.images, test.refs)))
    report |= downstream.captioning(model, processor, cap_train, cap_test, ds, seed, rule, device)
    seconds["captioning"], t0 = time.time() - t0, time.time()
    ref_train = load_refs(folder, "reftrain", size)
    ref_test = load_refs(folder, "reftest", size, ds.region_refs)
    report |= downstream.region(model, processor, ref_train, ref_test, ds, seed, rule, device)
    seconds["region"] = time.time() - t0
    return report | {"eval_seconds": seconds}


def evaluate(
    model,
    processor,
    cfg: PretrainConfig,
    heldout: PretrainData,
    vqa_files: dict | None,
    device: str = "cpu",
) -> dict:
    torch.manual_seed(cfg.seed)
    model.to(device).eval()
    if cfg.benchmarks:
        report = on_benchmarks(model, processor, cfg, device)
    else:
        report = {
            **retrieval(model, processor, heldout),
            **captioning(model, processor, heldout, cfg.attention),
        }
        report["heldout_images"] = len(heldout)
    if vqa_files:
        t0 = time.time()
        report.update(vqa(model, processor, cfg, vqa_files, device))
        report.setdefault("eval_seconds", {})["vqa"] = time.time() - t0
    else:
        report["vqa_accuracy"] = None
        log.info("pretrain eval: no VQA v2 files for this dataset; vqa_accuracy is null")
    return report
