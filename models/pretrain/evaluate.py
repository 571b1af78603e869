"""Downstream evaluation of a pretrained checkpoint:

- retrieval (image->text and text->image R@1, R@5) with the ITC embeddings, on the held-out images and their
  alt-text captions;
- captioning CIDEr-D (greedy captions of the held-out images against their alt-text);
- VQA accuracy with the official VQA v2 metric on held-out VQA v2 val questions, after a short, fixed
  fine-tune (same steps, batch, learning rate and seed for every checkpoint) on the VQA v2 train questions.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from jade.models.greedy import greedy
from jade.models.pretrain.base import PretrainData
from jade.models.pretrain.cider import cider_d
from jade.models.pretrain.config import PretrainConfig
from jade.models.pretrain.model import text_batch
from jade.models.pretrain.task_caption import PROMPT as CAPTION_PROMPT
from jade.models.tasks import answer_prompt
from jade.models.train import example_batch, lr_at
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


def vqa(model, processor, cfg: PretrainConfig, files: dict) -> dict:
    """Fine-tune a copy of the model on VQA v2 train (fixed budget), then answer held-out val questions."""
    size = cfg.arch.image_size
    train = _vqa_items(files["questions"], files["annotations"], files["images"], "train", size)
    val = _vqa_items(files["val_questions"], files["val_annotations"], files["val_images"], "val", size)
    val = val[: cfg.vqa_eval_questions]
    ft = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(ft.parameters(), lr=cfg.vqa_lr, weight_decay=0.0)
    rng = np.random.default_rng(cfg.seed)
    for step in range(cfg.vqa_steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.vqa_steps, max(1, cfg.vqa_steps // 10), cfg.vqa_lr)
        pick = [
            train[i] for i in rng.choice(len(train), size=min(cfg.vqa_batch_size, len(train)), replace=False)
        ]
        batch = example_batch(
            processor,
            [p[0] for p in pick],
            [answer_prompt(p[1]) for p in pick],
            [p[2] for p in pick],
            "cpu",
            cfg.attention,
        )
        ft.lm_loss(batch).backward()
        torch.nn.utils.clip_grad_norm_(ft.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    ft.eval()
    preds = greedy(
        ft.lm, processor, [v[0] for v in val], [answer_prompt(v[1]) for v in val], cfg.attention, max_new=6
    )
    accs = [vqa_accuracy(p, v[3]) for p, v in zip(preds, val, strict=True)]
    return {
        "vqa_accuracy": float(np.mean(accs)) if accs else None,
        "vqa_questions": len(accs),
        "vqa_train_questions": len(train),
    }


def evaluate(model, processor, cfg: PretrainConfig, heldout: PretrainData, vqa_files: dict | None) -> dict:
    torch.manual_seed(cfg.seed)
    model.eval()
    report = {**retrieval(model, processor, heldout), **captioning(model, processor, heldout, cfg.attention)}
    report["heldout_images"] = len(heldout)
    if vqa_files:
        report.update(vqa(model, processor, cfg, vqa_files))
    else:
        report["vqa_accuracy"] = None
        log.info("pretrain eval: no VQA v2 files for this dataset; vqa_accuracy is null")
    return report
