"""The pretrainer's model: a PaliGemma backbone (SigLIP vision tower + Gemma decoder) plus the small heads the
discriminative tasks need. Generative tasks use the backbone's LM loss under the run's attention rule (`models.attention`: prefix, image
or causal), applied by `models.train.example_batch`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from jade.models.train import lm_loss


class PretrainModel(nn.Module):
    def __init__(self, lm, embed_dim: int = 64):
        super().__init__()
        self.lm = lm
        hidden = lm.config.text_config.hidden_size
        self.img_proj = nn.Linear(hidden, embed_dim)  # ITC: pooled image tokens -> joint space
        self.txt_proj = nn.Linear(hidden, embed_dim)  # ITC: last text state -> joint space
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.itm_head = nn.Linear(hidden, 2)  # ITM: match / no match from the last fused state

    def image_embed(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Mean of the projected image tokens (what the decoder sees), L2-normalised."""
        feats = self.lm.model.get_image_features(pixel_values).pooler_output.mean(1)
        return F.normalize(self.img_proj(feats), dim=-1)

    def text_embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text-only decoder pass; the last position (left padding, ends with <eos>) sees every token."""
        h = self.lm.model.language_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(self.txt_proj(h[:, -1]), dim=-1)

    def fused_state(self, batch: dict) -> torch.Tensor:
        """Last-position decoder state of an image + text batch (see `lm_batch`)."""
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return self.lm.model(**inputs).last_hidden_state[:, -1]

    def lm_loss(self, batch: dict) -> torch.Tensor:
        return lm_loss(self.lm, batch)


def text_batch(tokenizer, texts: list[str], device) -> dict:
    enc = tokenizer([t + tokenizer.eos_token for t in texts], return_tensors="pt", padding="longest")
    return {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}
