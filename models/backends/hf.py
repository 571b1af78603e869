"""The `hf` backend: transformers models, with no wasted work, under the checkpoint's attention rule.

For models that take pre-encoded images (`mm_encoder_outputs`, as PaliGemma does), the backend runs its own
batched decoder over the model's forward:

1. each image goes through the vision encoder once (`prepare`), and the features are reused by every
   prompt of that image, in every call that is given the prepared images;
2. under the ``image`` and ``causal`` rules (`models.attention`) an image token never sees the prompt, so
   its keys and values are the same for every prompt: they are computed once per image (one prefill of the
   image tokens, kept with the prepared images) and every prompt prefills only its own tokens on a copy of
   that cache. Under ``prefix`` (image and prompt bidirectional) they depend on the prompt, and each
   (image, prompt) prefills image and prompt together;
3. each distinct (image, prompt) is prefilled once; its ``n`` samples share that prefill's key/value cache
   (the cache rows are repeated, not recomputed); the greedy requests of one (image, prompt) are decoded
   once, with the largest token limit, and each gets its own limit's prefix;
4. rows of any prompt lengths (from any images, greedy or sampled) decode together, up to `batch_size` rows
   a batch: each length group prefills without padding, then the shorter groups' caches are left-padded to
   the longest, and every decode step masks the pads and gives each row its own position, so a batch
   computes what one-by-one decoding computes (an unpadded batch needs neither); finished rows leave the
   batch;
5. tokens are chosen for all rows in one vectorized step (`sampling.choose`); sampling noise is keyed by
   (seed, sample, step, token), so samples do not depend on batch composition.

Other model families fall back to batched `model.generate` (`_PlainGenerate`), with the same semantics.
"""

from __future__ import annotations

import inspect
import math
from collections import defaultdict
from dataclasses import dataclass

import torch
from PIL import Image
from transformers import DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPooling

from jade.models import attention as attention_rules
from jade.models.backends.base import Completion, Request
from jade.models.backends.sampling import choose

__all__ = ["HFBackend", "Prepared", "Unit", "vision_tower"]


@dataclass
class Prepared:
    """Images already through the vision encoder of one backend's model (`HFBackend.prepare`)."""

    images: list[Image.Image]
    features: torch.Tensor | None  # [N, image tokens, hidden]; None on the plain path
    owner: int  # id() of the backend that made them
    # under the image / causal rules: every decoder layer's keys and values of the image tokens, per image
    kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class Unit:
    """One prefill: a prompt over one image, and the decode rows (request, sample number) it feeds."""

    image: int
    ids: tuple[int, ...]
    rows: list[tuple[int, int]]


class HFBackend:
    name = "hf"

    def __init__(
        self,
        model,
        processor,
        batch_size: int = 32,
        device: str | None = None,
        fast: bool | None = None,
        attention: str = attention_rules.DEFAULT,
    ):
        self.attention = attention_rules.check(attention)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.processor = processor
        self.batch_size = batch_size
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.eos = {t for t in (self.tokenizer.eos_token_id, self.tokenizer.pad_token_id) if t is not None}
        supports = "mm_encoder_outputs" in inspect.signature(model.forward).parameters and hasattr(
            processor, "image_seq_length"
        )
        self.fast = supports if fast is None else (fast and supports)
        self._ids: dict[str, tuple[int, ...]] = {}
        # Counters that the benchmark reads: vision-encoder rows, prefilled tokens and image prefills (rows of
        # image tokens prefilled) since construction.
        self.vision_rows = 0
        self.prefill_tokens = 0
        self.image_prefills = 0
        tower = vision_tower(self.model)
        if tower is not None:
            tower.register_forward_hook(self._count_vision)
        self._plain = _PlainGenerate(self)

    def _count_vision(self, module, args, output) -> None:
        if args and isinstance(args[0], torch.Tensor):
            self.vision_rows += args[0].shape[0]

    # -- the protocol -------------------------------------------------------------------------------------

    @torch.inference_mode()
    def prepare(self, images: list[Image.Image]) -> Prepared:
        """Run the vision encoder once over `images`; pass the result to `generate` as often as needed."""
        if not self.fast:
            return Prepared(list(images), None, id(self))
        feats = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            pixels = self.processor.image_processor(images=chunk, return_tensors="pt")["pixel_values"]
            out = self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype))
            feats.append(out.pooler_output)
        features = torch.cat(feats) if feats else None
        prepared = Prepared(list(images), features, id(self))
        if self.shared_image_kv and features is not None:
            prepared.kv = self._image_kv(features)
        return prepared

    @property
    def shared_image_kv(self) -> bool:
        """Whether the image tokens' keys and values are the same for every prompt (not under prefix)."""
        return self.attention != "prefix"

    def _image_kv(self, features: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One prefill of the image tokens alone per image, under the rule (bidirectional among themselves
        under ``image``, causal under ``causal``): every layer's keys and values, [N, heads, tokens, dim]."""
        n_tok = self.processor.image_seq_length
        layers: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
        for start in range(0, len(features), self.batch_size):
            chunk = features[start : start + self.batch_size]
            ids = torch.full((len(chunk), n_tok), self.processor.image_token_id, device=self.device)
            cache = DynamicCache(config=self.model.config)
            self.model.model(
                input_ids=ids,
                token_type_ids=attention_rules.token_types(
                    ids, torch.zeros_like(ids), self.processor.image_token_id, self.attention
                ),
                attention_mask=torch.ones_like(ids),
                past_key_values=cache,
                use_cache=True,
                mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=chunk)},
            )
            self.prefill_tokens += ids.numel()
            self.image_prefills += len(chunk)
            layers.append([(layer.keys, layer.values) for layer in cache.layers])
        return [
            (torch.cat([c[i][0] for c in layers]), torch.cat([c[i][1] for c in layers]))
            for i in range(len(layers[0]))
        ]

    def generate(self, images, requests: list[Request]) -> list[list[Completion]]:
        if not isinstance(images, Prepared) or images.owner != id(self):
            images = self.prepare(list(images.images if isinstance(images, Prepared) else images))
        if not self.fast:
            return self._plain.generate(images.images, requests)
        return self._generate_fast(images, requests)

    # -- the prefix-sharing decoder -------------------------------------------------------------------------

    def _generate_fast(self, prepared: Prepared, requests: list[Request]) -> list[list[Completion]]:
        out: list[list[Completion | None]] = [[None] * (1 if r.greedy else r.n) for r in requests]
        ids = self._prompt_ids(sorted({r.prompt for r in requests}))
        # One prefill unit per distinct (image, prompt, sampling settings); its samples share its cache.
        # Greedy decoding is deterministic, so the greedy answers to one (image, prompt) with any token limits
        # are prefixes of the answer with the largest limit (the filter's presupposition checks, asked with 3
        # tokens, are often questions it also answers with 8): that one is decoded, and each request gets its
        # own limit's prefix of it.
        units: dict[tuple, Unit] = {}
        greedy: dict[tuple, list[int]] = defaultdict(list)  # (image, prompt) -> its greedy requests
        for i, r in enumerate(requests):
            if r.greedy:
                key: tuple = (r.image, r.prompt)
                greedy[key].append(i)
                units.setdefault(key, Unit(r.image, ids[r.prompt], []))
            else:
                key = (r.image, r.prompt, r.top_k, r.temperature, r.seed, r.max_new_tokens)
                unit = units.setdefault(key, Unit(r.image, ids[r.prompt], []))
                unit.rows += [(i, j) for j in range(r.n)]
        same: dict[int, list[int]] = {}  # the greedy request decoded -> the others of its (image, prompt)
        for key, members in greedy.items():
            lead = max(members, key=lambda i: requests[i].max_new_tokens)  # the first of the longest
            units[key].rows = [(lead, 0)]
            same[lead] = [i for i in members if i != lead]
        for batch in self._batches(list(units.values())):
            for (i, j), toks, lps in self._decode(prepared, batch, requests):
                out[i][j] = self._completion(toks, lps)
                for k in same.get(i, ()):
                    limit = requests[k].max_new_tokens
                    out[k][0] = self._completion(toks[:limit], lps[:limit])
        return out  # type: ignore[return-value]

    def _batches(self, units: list[Unit]) -> list[list[Unit]]:
        """Up to `batch_size` decode rows a batch, whatever the prompt lengths (`_decode` pads the shorter
        prompts' caches); units in order of prompt length, so a batch spans few lengths and pads little.
        A unit with more rows than `batch_size` makes a batch of its own. Deterministic order."""
        batches: list[list[Unit]] = []
        cur: list[Unit] = []
        rows = 0
        for u in sorted(units, key=lambda u: len(u.ids)):  # stable: equal lengths keep their order
            if cur and rows + len(u.rows) > self.batch_size:
                batches.append(cur)
                cur, rows = [], 0
            cur.append(u)
            rows += len(u.rows)
        if cur:
            batches.append(cur)
        return batches

    def _prompt_ids(self, prompts: list[str]) -> dict[str, tuple[int, ...]]:
        """Token ids as the processor builds them: image tokens, BOS, the prompt, a newline (cached). With
        the image's keys and values shared, only the prompt's own ids (BOS, prompt, newline)."""
        new = [p for p in prompts if p not in self._ids]
        if new:
            tok = self.tokenizer
            enc = tok([tok.bos_token + p + "\n" for p in new], add_special_tokens=False)["input_ids"]
            image = (self.processor.image_token_id,) * self.processor.image_seq_length
            self._ids.update({p: image + tuple(e) for p, e in zip(new, enc, strict=True)})
        skip = self.processor.image_seq_length if self.shared_image_kv else 0
        return {p: self._ids[p][skip:] for p in prompts}

    def _prefill(self, prepared: Prepared, units: list[Unit]) -> tuple[torch.Tensor, DynamicCache]:
        """Last-position logits and the cache of every unit's prompt over its image, prefilled once."""
        dev = self.device
        input_ids = torch.tensor([u.ids for u in units], device=dev)
        self.prefill_tokens += input_ids.numel()
        which = torch.tensor([u.image for u in units], device=dev)
        cache = DynamicCache(config=self.model.config)
        if prepared.kv is not None:
            # The image's keys and values, computed once in `prepare`, then only the prompt's tokens: they
            # attend causally to the image and to each other (the cache is set, so no prefix block applies).
            for i, (k, v) in enumerate(prepared.kv):
                cache.update(k[which], v[which], i)
            logits = self.model(
                input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1
            ).logits
            return logits[:, -1], cache
        # prefix rule: image and prompt together, bidirectional (token_type_ids 0 over both, as in training)
        self.image_prefills += len(units)
        feats = prepared.features[which.to(prepared.features.device)]
        types = attention_rules.token_types(
            input_ids, torch.zeros_like(input_ids), self.processor.image_token_id, self.attention
        )
        logits = self.model(
            input_ids=input_ids,
            token_type_ids=types,
            attention_mask=torch.ones_like(input_ids),
            mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=feats)},
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits
        return logits[:, -1], cache

    def _prefill_all(
        self, prepared: Prepared, units: list[Unit]
    ) -> tuple[list[Unit], torch.Tensor, DynamicCache, torch.Tensor]:
        """Prefill a batch of units of any prompt lengths: each length group once, without padding, then one
        cache for all, each group's left-padded to the longest (`_left_pad`). Returns the units in the
        cache's row order, their last-position logits, the cache and each unit's own cache length."""
        groups: dict[int, list[Unit]] = defaultdict(list)
        for u in units:
            groups[len(u.ids)].append(u)
        ordered: list[Unit] = []
        logits, caches, lengths = [], [], []
        for _, group in sorted(groups.items()):
            lg, cache = self._prefill(prepared, group)
            ordered += group
            logits.append(lg)
            caches.append(cache)
            lengths += [cache.get_seq_length()] * len(group)
        cache = caches[0] if len(caches) == 1 else _left_pad(caches, self.model.config)
        return ordered, torch.cat(logits), cache, torch.tensor(lengths, device=self.device)

    @torch.inference_mode()
    def _decode(self, prepared: Prepared, units: list[Unit], requests: list[Request]):
        dev = self.device
        # 1. Prefill every unit once (`lengths`: each unit's cache length before padding).
        units, logits, cache, lengths = self._prefill_all(prepared, units)
        # 2. Repeat each unit's cache and logits for its rows (the n samples share one prefill).
        rows = [row for u in units for row in u.rows]
        owner = torch.tensor([k for k, u in enumerate(units) for _ in u.rows], device=dev)
        if len(rows) != len(units):
            cache.batch_select_indices(owner)
        logits, lengths = logits[owner], lengths[owner]
        reqs = [requests[i] for i, _ in rows]
        greedy = torch.tensor([r.greedy for r in reqs], device=dev)
        top_k = torch.tensor([r.top_k for r in reqs], device=dev)
        temp = torch.tensor([r.temperature for r in reqs], device=dev, dtype=torch.float32)
        seed = torch.tensor([r.seed for r in reqs], device=dev, dtype=torch.int64)
        sample = torch.tensor([j for _, j in rows], device=dev, dtype=torch.int64)
        limit = torch.tensor([r.max_new_tokens for r in reqs], device=dev)
        alive = torch.arange(len(rows), device=dev)  # original row numbers still decoding
        steps = int(limit.max())
        tokens = torch.full((len(rows), steps), -1, dtype=torch.long, device=dev)  # -1: not generated
        logps = torch.zeros((len(rows), steps), device=dev)
        eos = torch.tensor(sorted(self.eos), device=dev)
        # Only a padded batch needs a mask and explicit positions; an unpadded one decodes exactly as before.
        mask = _padding_mask(lengths, steps) if bool((lengths != lengths[0]).any()) else None
        # 3. Decode all rows together; finished rows (EOS or their own token limit) leave the batch.
        for step in range(steps):
            tok, lp = choose(logits, greedy, top_k, temp, seed, sample, step)
            tokens[alive, step], logps[alive, step] = tok, lp
            done = torch.isin(tok, eos) | (limit <= step + 1)
            if bool(done.all()):
                break
            if bool(done.any()):
                keep = (~done).nonzero()[:, 0]
                cache.batch_select_indices(keep)
                alive, tok, lengths = alive[keep], tok[keep], lengths[keep]
                greedy, top_k, temp, seed, sample, limit = (
                    x[keep] for x in (greedy, top_k, temp, seed, sample, limit)
                )
                mask = None if mask is None else mask[keep]
            padding: dict[str, torch.Tensor] = {}
            if mask is not None:
                # The pads stay masked; the new token sits at its row's own position, cache length + step,
                # counted from 1 as PaliGemma counts (`PaliGemmaModel.forward`: position_ids + 1).
                padding = {
                    "attention_mask": mask[:, : cache.get_seq_length() + 1],
                    "position_ids": (lengths + step + 1)[:, None],
                }
            logits = self.model(
                input_ids=tok[:, None], past_key_values=cache, use_cache=True, logits_to_keep=1, **padding
            ).logits[:, -1]
        for row, toks, lps in zip(rows, tokens.tolist(), logps.tolist(), strict=True):
            n = next((j for j, t in enumerate(toks) if t < 0), len(toks))
            yield row, toks[:n], lps[:n]  # the tokens it generated and their log-probabilities

    def _completion(self, toks: list[int], lps: list[float]) -> Completion:
        """Text up to the first EOS; score exp(mean log-prob) of those tokens (of the EOS if there are none)."""
        n = next((j for j, t in enumerate(toks) if t in self.eos), len(toks))
        kept = [p for p in lps[: max(n, 1)] if math.isfinite(p)]
        score = math.exp(sum(kept) / len(kept)) if kept else 0.0
        return Completion(self.tokenizer.decode(toks[:n], skip_special_tokens=True).strip(), score)


def _left_pad(caches: list[DynamicCache], config) -> DynamicCache:
    """One cache of the rows of `caches`, in order, each left-padded with zero keys and values to the longest
    (the pads are masked in every decode step: `_padding_mask`)."""
    total = max(c.get_seq_length() for c in caches)
    merged = DynamicCache(config=config)
    for i in range(len(caches[0].layers)):
        keys, values = [], []
        for c in caches:
            k, v = c.layers[i].keys, c.layers[i].values
            if (pad := total - k.shape[2]) > 0:
                zeros = k.new_zeros(k.shape[0], k.shape[1], pad, k.shape[3])
                k, v = torch.cat([zeros, k], 2), torch.cat([zeros, v], 2)
            keys.append(k)
            values.append(v)
        merged.update(torch.cat(keys), torch.cat(values), i)
    return merged


def _padding_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """The 2-D attention mask of a left-padded batch over its whole decode: [rows, longest + steps], 0 on each
    row's pads (the first longest - length positions), 1 on its cache and on every token it will decode."""
    total = int(lengths.max())
    pos = torch.arange(total + steps, device=lengths.device)
    return (pos[None, :] >= (total - lengths)[:, None]).long()


def vision_tower(model):
    inner = getattr(model, "model", model)
    for name in ("vision_tower", "visual", "vision_model"):
        if (tower := getattr(inner, name, None)) is not None:
            return tower
    return None


class _PlainGenerate:
    """Batched `model.generate` for families without pre-encoded image input. Greedy requests decode in
    batches of equal prompt length; sampled ones per (image, seed) under that seed."""

    def __init__(self, backend: HFBackend):
        self.b = backend
        self._lengths: dict[str, int] = {}  # prompt -> token count (prompts repeat across calls)

    def generate(self, images: list[Image.Image], requests: list[Request]) -> list[list[Completion]]:
        out: list[list[Completion]] = [[] for _ in requests]
        greedy = [i for i, r in enumerate(requests) if r.greedy]
        for idx in self._batches(greedy, requests):
            for i, comp in zip(idx, self._run(images, [requests[i] for i in idx], sample=False), strict=True):
                out[i] = [comp]
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
        by_len: dict[int, list[int]] = defaultdict(list)
        for i in idx:
            prompt = reqs[i].prompt
            if prompt not in self._lengths:
                self._lengths[prompt] = len(
                    self.b.tokenizer(prompt + "\n", add_special_tokens=False)["input_ids"]
                )
            by_len[self._lengths[prompt]].append(i)
        bs = self.b.batch_size
        return [g[s : s + bs] for _, g in sorted(by_len.items()) for s in range(0, len(g), bs)]

    @torch.inference_mode()
    def _run(self, images: list[Image.Image], reqs: list[Request], sample: bool) -> list[Completion]:
        from jade.models.train import example_batch

        b = self.b
        batch = example_batch(
            b.processor,
            [images[r.image] for r in reqs],
            [r.prompt for r in reqs],
            None,
            b.device,
            b.attention,
        )
        b.prefill_tokens += batch["input_ids"].numel()
        b.image_prefills += len(reqs)
        kwargs: dict = {"do_sample": False}
        if sample:
            kwargs = {"do_sample": True, "top_k": reqs[0].top_k or None, "temperature": reqs[0].temperature}
        gen = b.model.generate(
            **batch,
            max_new_tokens=max(r.max_new_tokens for r in reqs),
            output_scores=True,
            return_dict_in_generate=True,
            **kwargs,
        )
        seqs = gen.sequences[:, batch["input_ids"].shape[1] :]
        logp = b.model.compute_transition_scores(gen.sequences, gen.scores, normalize_logits=True)
        return [
            b._completion(toks[: r.max_new_tokens].tolist(), lp[: r.max_new_tokens].tolist())
            for toks, lp, r in zip(seqs, logp, reqs, strict=True)
        ]
