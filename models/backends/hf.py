"""The `hf` backend: transformers `generate`, batched.

Greedy requests of many images decode together, grouped by prompt length. Sampled requests of one image run
in one `generate` call under that image's seed, so samples do not depend on batch composition.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from PIL import Image

from jade.models.backends.base import Completion, Request


class HFBackend:
    name = "hf"

    def __init__(self, model, processor, batch_size: int = 32, device: str | None = None):
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.batch_size = batch_size
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        self._lengths: dict[str, int] = {}

    def generate(self, images: list[Image.Image], requests: list[Request]) -> list[list[Completion]]:
        out: list[list[Completion]] = [[] for _ in requests]
        # Greedy requests of all images decode together, in batches of equal prompt length (`_batches`).
        greedy = [i for i, r in enumerate(requests) if r.greedy]
        for idx in self._batches(greedy, requests):
            for i, comp in zip(idx, self._run(images, [requests[i] for i in idx], sample=False), strict=True):
                out[i] = [comp]
        # Sampled requests: per (image, seed) group, each prompt repeated n times, under that seed.
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            if not r.greedy:
                groups[(r.image, r.seed)].append(i)
        for (_, seed), idx in sorted(groups.items()):
            rows = [requests[i] for i in idx for _ in range(requests[i].n)]
            owner = [i for i in idx for _ in range(requests[i].n)]
            torch.manual_seed(seed)
            for chunk in self._batches(list(range(len(rows))), rows):
                for j, comp in zip(
                    chunk, self._run(images, [rows[j] for j in chunk], sample=True), strict=True
                ):
                    out[owner[j]].append(comp)
        return out

    def _batches(self, idx: list[int], reqs: list[Request]) -> list[list[int]]:
        """Batches of requests whose prompts have the same token length: no padding, so batched decoding
        equals one-by-one decoding exactly. Deterministic order."""
        by_len: dict[int, list[int]] = defaultdict(list)
        for i in idx:
            by_len[self._length(reqs[i].prompt)].append(i)
        return [
            group[start : start + self.batch_size]
            for _, group in sorted(by_len.items())
            for start in range(0, len(group), self.batch_size)
        ]

    def _length(self, prompt: str) -> int:
        if prompt not in self._lengths:
            self._lengths[prompt] = len(self.tokenizer(prompt + "\n", add_special_tokens=False)["input_ids"])
        return self._lengths[prompt]

    @torch.inference_mode()
    def _run(self, images: list[Image.Image], reqs: list[Request], sample: bool) -> list[Completion]:
        batch = self.processor(
            text=[f"<image>{r.prompt}" for r in reqs],
            images=[images[r.image] for r in reqs],
            return_tensors="pt",
            padding="longest",
        ).to(self.device)
        batch.pop("labels", None)
        # token_type_ids (all prefix here) select PaliGemma's prefix-LM mask, as in training.
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
