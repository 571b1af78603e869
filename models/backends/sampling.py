"""Token choice for the hf backend's decoder: greedy or top-K sampling, vectorized over rows.

Sampling uses the Gumbel-max trick with counter-based noise: the noise of a candidate token is a hash of
(request seed, sample number, decoding step, token id). So a sample depends only on its own request, never on
what else is in the batch, which rows finished early, or the order of the batch; and one call picks the
tokens of every row with no Python loop per row.
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer finaliser (lowbias32, C. Wellons), on int64 tensors holding values in [0, 2^32)."""
    x = x & _M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32  # int64 products wrap; the low 32 bits are still exact
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def hashed_uniform(seed: torch.Tensor, sample: torch.Tensor, step: int, token: torch.Tensor) -> torch.Tensor:
    """Uniform(0, 1) noise, float64, one per (row, candidate): seed/sample are [R], token is [R, K]."""
    h = _mix32(seed & _M32) ^ _mix32((seed >> 32) + 0x9E3779B9)
    h = _mix32(h ^ _mix32(sample + 0x85EBCA6B))
    h = _mix32(h ^ (step * 0x27D4EB2F & _M32))
    h = _mix32(h.unsqueeze(1) ^ _mix32(token + 0x165667B1))
    return (h.double() + 0.5) / 4294967296.0


def choose(
    logits: torch.Tensor,
    greedy: torch.Tensor,
    top_k: torch.Tensor,
    temperature: torch.Tensor,
    seed: torch.Tensor,
    sample: torch.Tensor,
    step: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The next token of every row and its log-probability under the distribution it was drawn from.

    logits [R, V]; greedy (bool), top_k (int, 0 = whole vocabulary), temperature (float), seed and sample
    (int64) are per-row [R] tensors. Greedy rows take the argmax, scored by log-softmax of the raw logits (as
    `transformers.generate` scores them). Sampled rows follow transformers' order: divide by the temperature,
    keep the K best, then draw from the softmax over them. A batch of greedy rows only skips the sampling,
    and one of sampled rows only skips the greedy choice (every part is row-wise: no row's result depends on
    the others).
    """
    logits = logits.float()
    # 1. Greedy rows only: the argmax.
    if bool(greedy.all()):
        return _greedy(logits)
    # 2. Sampling: temperature, then the K best candidates of each row (K up to the largest asked for).
    vocab = logits.shape[-1]
    k_row = torch.where(top_k > 0, top_k, vocab).clamp(max=vocab)
    scaled = logits / temperature.clamp(min=1e-6)[:, None]
    vals, idx = scaled.topk(int(k_row.max()), dim=-1)
    outside = torch.arange(vals.shape[1], device=vals.device)[None, :] >= k_row[:, None]
    vals = vals.masked_fill(outside, float("-inf"))
    # 3. Gumbel-max: argmax(value + Gumbel noise) is a draw from softmax(value) over the kept candidates.
    gumbel = -torch.log(-torch.log(hashed_uniform(seed, sample, step, idx)))
    pick = (vals.double() + gumbel).argmax(-1, keepdim=True)
    sampled_tok = idx.gather(1, pick)[:, 0]
    sampled_lp = torch.log_softmax(vals, -1).gather(1, pick)[:, 0]
    if not bool(greedy.any()):  # a batch of samples only (the usual case): no greedy work to merge
        return sampled_tok, sampled_lp
    greedy_tok, greedy_lp = _greedy(logits)
    return torch.where(greedy, greedy_tok, sampled_tok), torch.where(greedy, greedy_lp, sampled_lp)


def _greedy(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The argmax of the raw logits, scored by their log-softmax (as `transformers.generate` scores it)."""
    tok = logits.argmax(-1)
    return tok, torch.log_softmax(logits, -1).gather(1, tok[:, None])[:, 0]
