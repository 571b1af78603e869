"""The `hf` backend: transformers `generate`, batched.

Greedy requests of many images decode together, grouped by prompt length. Sampled requests of one image run
in one `generate` call under that image's seed, so samples do not depend on batch composition.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from jade.models.backends.base import Completion, Request
from PIL import Image


class HFBackend:
    name = "hf"

    def __init__(
        self, model, processor, batch_size: int = 32, device: str | None = None, attention: str = "causal"
    ):
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.batch_size = batch_size
        self.attention = attention  # as the model was trained: causal, or prefix (PaliGemma's prefix-LM)
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"

    def generate(self, images: list[Image.Image], requests: list[Request]) -> list[list[Completion]]:
        out: list[list[Completion] | None] = [None] * len(requests)
        greedy = [i for i, r in enumerate(requests) if r.greedy]
        # Group greedy requests by prompt length so padding stays small, then decode in batches.
        greedy.sort(key=lambda i: (len(requests[i].prompt), requests[i].max_new_tokens))
        for start in range(0, len(greedy), self.batch_size):
            idx = greedy[start : start + self.batch_size]
            texts = self._run(images, [requests[i] for i in idx], sample=False)
            for i, comp in zip(idx, texts, strict=True):
                out[i] = [comp]
        # Sampled requests: one call per (image, seed) group, each prompt repeated n times.
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            if not r.greedy:
                groups[(r.image, r.seed)].append(i)
        for (_, seed), idx in sorted(groups.items()):
            rows = [requests[i] for i in idx for _ in range(requests[i].n)]
            torch.manual_seed(seed)
            comps = []
            for start in range(0, len(rows), max(self.batch_size, 1)):
                comps.extend(self._run(images, rows[start : start + self.batch_size], sample=True))
            pos = 0
            for i in idx:
                out[i] = comps[pos : pos + requests[i].n]
                pos += requests[i].n
        return out  # type: ignore[return-value]

    @torch.inference_mode()
    def _run(self, images: list[Image.Image], reqs: list[Request], sample: bool) -> list[Completion]:
        batch = self.processor(
            text=[f"<image>{r.prompt}" for r in reqs],
            images=[images[r.image] for r in reqs],
            return_tensors="pt",
            padding="longest",
        ).to(self.device)
        batch.pop("labels", None)
        if self.attention == "causal":
            batch.pop("token_type_ids", None)
        kwargs = {"do_sample": False}
        if sample:
            r = reqs[0]
            kwargs = {"do_sample": True, "top_k": r.top_k or None, "temperature": r.temperature}
        gen = self.model.generate(
            **batch,
            max_new_tokens=max(r.max_new_tokens for r in reqs),
            output_scores=True,
            return_dict_in_generate=True,
            **kwargs,
        )
        prompt_len = batch["input_ids"].shape[1]
        seqs = gen.sequences[:, prompt_len:]
        logp = self.model.compute_transition_scores(gen.sequences, gen.scores, normalize_logits=True)
        eos, pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        result = []
        for row, (toks, lp, r) in enumerate(zip(seqs, logp, reqs, strict=True)):
            toks = toks[: r.max_new_tokens].tolist()
            n = len(toks)
            for j, t in enumerate(toks):
                if t in (eos, pad):
                    n = j
                    break
            lps = lp[: max(n, 1)].float()
            lps = lps[torch.isfinite(lps)]
            score = math.exp(lps.mean().item()) if len(lps) else 0.0
            text = self.tokenizer.decode(toks[:n], skip_special_tokens=True)
            result.append(Completion(text=text.strip(), score=score))
            del row
        return result
