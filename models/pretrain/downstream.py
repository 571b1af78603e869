"""Downstream tasks on the benchmarks, scored with each field's standard metric:

- retrieval (COCO 5k test protocol): the ITC embeddings of every test image and of every reference caption;
  image -> text is right at K when any of the image's captions is among the K nearest texts, text -> image when
  the caption's own image is among the K nearest images (R@1, R@5, R@10). Fine-tuned, as ALBEF, BLIP and JADE
  report COCO retrieval: a short fixed ITC fine-tune on the captioning train split (each image with a random one
  of its references), then the test split (`retrieval_steps`; 0: zero-shot). The zero-shot numbers of the
  checkpoint itself are kept beside them (``retrieval_zs_*``);
- captioning (COCO Karpathy test protocol): a short fixed fine-tune on the captioning train split (each step a
  random one of an image's references), then greedy captions of the test images, CIDEr-D against all their
  references (never the alt-text);
- the region task (RefCOCO with ground-truth boxes as proposals, as UNITER and ViLBERT evaluate it): a short
  fixed fine-tune on the train split's expressions as dense captions of their boxes (``describe <box>`` ->
  the expression, the pretrainer's `dense` format), then, for each test expression, every object box of its
  image is scored by the likelihood of the expression given that box; the best box is right when it overlaps
  the truth at IoU >= 0.5. Chance: one candidate at random.

Each fine-tune trains a copy of the checkpoint, with the same steps, batch, learning rate and seed for every
checkpoint, so the only thing that differs between settings is the pretrained model.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from jade.models.greedy import greedy
from jade.models.pretrain.benchmarks import CaptionSet, RefSet
from jade.models.pretrain.cider import cider_d
from jade.models.pretrain.model import text_batch
from jade.models.pretrain.task_caption import PROMPT as CAPTION_PROMPT
from jade.models.pretrain.task_dense import PROMPT as DENSE_PROMPT
from jade.models.pretrain.task_itc import contrastive_loss
from jade.models.tasks import box_to_tokens, iou
from jade.models.train import example_batch, lr_at

REGION_PROMPT = DENSE_PROMPT  # "describe {box}"
KS = (1, 5, 10)


def _tuned_copy(model, steps: int, lr: float, seed: int, loss_of):
    """A copy of ``model`` trained for ``steps`` on ``loss_of(copy, rng)``: warm-up over the first tenth, then
    the cosine schedule; AdamW, no weight decay, gradients clipped at 1."""
    ft = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(ft.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, max(1, steps // 10), lr)
        loss_of(ft, rng).backward()
        torch.nn.utils.clip_grad_norm_(ft.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return ft.eval()


def finetune_copy(
    model, processor, draw, steps: int, batch_size: int, lr: float, seed: int, attention: str, device: str
):
    """A copy of ``model`` fine-tuned for ``steps`` on the LM loss: ``draw(rng, n)`` gives n examples as
    (images, prefixes, suffixes); the schedule of `_tuned_copy`."""

    def loss_of(ft, rng):
        images, prefixes, suffixes = draw(rng, batch_size)
        return ft.lm_loss(example_batch(processor, images, prefixes, suffixes, device, attention))

    return _tuned_copy(model, steps, lr, seed, loss_of)


def finetune_itc(
    model, processor, train: CaptionSet, steps: int, batch_size: int, lr: float, seed: int, device
):
    """A copy of ``model`` fine-tuned for ``steps`` on the pretraining's ITC loss over (image, one of its
    references) pairs of distinct images; the schedule of `_tuned_copy`."""

    def loss_of(ft, rng):
        pick = rng.choice(len(train), size=min(batch_size, len(train)), replace=False)
        texts = [train.refs[i][rng.integers(len(train.refs[i]))] for i in pick]
        px = processor.image_processor([train.images[i] for i in pick], return_tensors="pt")["pixel_values"]
        img = ft.image_embed(px.to(device))
        return contrastive_loss(ft, img, ft.text_embed(**text_batch(processor.tokenizer, texts, device)))

    return _tuned_copy(model, steps, lr, seed, loss_of)


def recall_at(sim: torch.Tensor, owner: torch.Tensor, ks=KS) -> tuple[dict, dict]:
    """(image -> text, text -> image) recall at each K from ``sim`` (images x texts); ``owner[j]`` is the image
    of text j."""
    n_img = sim.shape[0]
    i2t, t2i = {}, {}
    for k in ks:
        top_t = sim.topk(min(k, sim.shape[1]), dim=1).indices  # images x k: text indices
        i2t[k] = (owner[top_t] == torch.arange(n_img)[:, None]).any(1).float().mean().item()
        top_i = sim.T.topk(min(k, n_img), dim=1).indices  # texts x k: image indices
        t2i[k] = (top_i == owner[:, None]).any(1).float().mean().item()
    return i2t, t2i


@torch.inference_mode()
def retrieval(model, processor, test: CaptionSet, device: str = "cpu", bs: int = 128) -> dict:
    texts = [r for refs in test.refs for r in refs]
    owner = torch.tensor([i for i, refs in enumerate(test.refs) for _ in refs])
    imgs, txts = [], []
    for s in range(0, len(test), bs):
        px = processor.image_processor(test.images[s : s + bs], return_tensors="pt")["pixel_values"]
        imgs.append(model.image_embed(px.to(device)).float().cpu())
    for s in range(0, len(texts), bs):
        txts.append(
            model.text_embed(**text_batch(processor.tokenizer, texts[s : s + bs], device)).float().cpu()
        )
    sim = torch.cat(imgs) @ torch.cat(txts).T
    i2t, t2i = recall_at(sim, owner)
    out = {f"retrieval_i2t_r{k}": v for k, v in i2t.items()}
    # per query, right at 1 (in test order): paired comparisons and bootstraps over items
    out["retrieval_i2t_hits"] = (owner[sim.argmax(1)] == torch.arange(len(test))).int().tolist()
    out["retrieval_t2i_hits"] = (sim.T.argmax(1) == owner).int().tolist()
    out |= {f"retrieval_t2i_r{k}": v for k, v in t2i.items()}
    return out | {"retrieval_images": len(test), "retrieval_texts": len(texts)}


def captioning(model, processor, train: CaptionSet, test: CaptionSet, ds, seed: int, attention: str, device):
    def draw(rng, n):
        pick = rng.choice(len(train), size=min(n, len(train)), replace=False)
        refs = [train.refs[i][rng.integers(len(train.refs[i]))] for i in pick]
        return [train.images[i] for i in pick], [CAPTION_PROMPT] * len(pick), refs

    ft = finetune_copy(
        model, processor, draw, ds.caption_steps, ds.batch_size, ds.lr, seed, attention, device
    )
    preds = greedy(
        ft.lm,
        processor,
        test.images,
        [CAPTION_PROMPT] * len(test),
        attention,
        ds.caption_max_tokens,
        64,
        device,
    )
    score, per_image = cider_d(preds, test.refs)
    examples = [(test.refs[i][0], preds[i]) for i in range(min(5, len(test)))]
    return {
        "cider": score,
        "cider_images": len(test),
        "cider_scores": per_image,
        "caption_examples": examples,
    }


def region(model, processor, train: RefSet, test: RefSet, ds, seed: int, attention: str, device):
    def draw(rng, n):
        pick = rng.choice(len(train), size=min(n, len(train)), replace=False)
        prompts = [REGION_PROMPT.format(box=box_to_tokens(train.boxes[i])) for i in pick]
        return [train.images[i] for i in pick], prompts, [train.sentences[i] for i in pick]

    ft = finetune_copy(model, processor, draw, ds.region_steps, ds.batch_size, ds.lr, seed, attention, device)
    rows = [(r, c) for r in range(len(test)) for c in range(len(test.candidates[r]))]
    nll = expression_nll(
        ft,
        processor,
        [test.images[r] for r, _ in rows],
        [REGION_PROMPT.format(box=box_to_tokens(test.candidates[r][c])) for r, c in rows],
        [test.sentences[r] for r, _ in rows],
        attention,
        device,
    )
    best: dict[int, tuple[float, int]] = {}
    for (r, c), v in zip(rows, nll, strict=True):
        if r not in best or v < best[r][0]:
            best[r] = (v, c)
    right = [iou(test.candidates[r][best[r][1]], test.boxes[r]) >= 0.5 for r in range(len(test))]
    return {
        "region_accuracy": float(np.mean(right)) if right else None,
        "region_refs": len(right),
        "region_hits": [int(r) for r in right],
    }


@torch.inference_mode()
def expression_nll(
    model, processor, images, prompts, targets, attention: str, device, bs: int = 64
) -> list[float]:
    """The summed negative log-likelihood of each target given its image and prompt."""
    out: list[float] = []
    for s in range(0, len(prompts), bs):
        batch = example_batch(
            processor, images[s : s + bs], prompts[s : s + bs], targets[s : s + bs], device, attention
        )
        labels = batch.pop("labels")
        logits = model.lm(**batch).logits[:, :-1].float()
        target = labels[:, 1:]
        tok = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), target, ignore_index=-100, reduction="none"
        )
        out += tok.sum(1).tolist()
    return out
