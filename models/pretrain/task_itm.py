"""Image-text matching: a binary head on the fused (image + text) state. Each positive pair gets a hard
negative: the batch's other text most similar to its image under the current ITC embeddings (ALBEF-style
mining, without gradients), so the head must tell apart captions that the contrastive space confuses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from jade.models.pretrain.base import PretrainData, TaskContext
from jade.models.pretrain.task_itc import distinct, embed_pairs

PROMPT = "match"


class ITM:
    name = "itm"

    def examples(self, data: PretrainData) -> list[tuple[int, str]]:
        return data.captioned()

    def loss(self, ctx: TaskContext, examples: list[tuple[int, str]]):
        ex = distinct(examples)
        idx, texts = [i for i, _ in ex], [t for _, t in ex]
        if len(ex) > 1:
            with torch.no_grad():
                img, txt = embed_pairs(ctx, idx, texts)
                sim = img @ txt.T
                sim.fill_diagonal_(-float("inf"))  # a pair's own text is not a negative
                hard = sim.argmax(1).tolist()
        else:
            hard = [0]
        pairs = [(i, t, 1) for i, t in ex] + [
            (i, texts[h], 0) for i, h in zip(idx, hard, strict=True) if len(ex) > 1
        ]
        batch = ctx.batch([i for i, _, _ in pairs], [PROMPT] * len(pairs), [t for _, t, _ in pairs])
        logits = ctx.model.itm_head(ctx.model.fused_state(batch))
        labels = torch.tensor([y for _, _, y in pairs], device=logits.device)
        return F.cross_entropy(logits, labels)
