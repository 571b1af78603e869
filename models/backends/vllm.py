"""The `vllm` backend (optional extra, GPU machines): the same requests through vLLM's multimodal API.

Each request becomes one vLLM prompt with its image; sampled requests ask for ``n`` samples of one prompt
(`SamplingParams.n`, seeded per request), greedy ones for temperature 0. Prefix caching is on, so the samples
of a prompt and the prompts of an image reuse cached blocks. The engine lives inside the Ray Data actor that
calls it (`stages.generate.Generator` / `stages.filter.FilterWorker`), one per actor and GPU share.

What differs from hf, and why (see README, "vLLM"):
- vLLM's sampler draws from its own random streams, so samples are seeded per request but are not the same
  draws as hf's; greedy answers are meant to agree, up to kernel numerics.
- PaliGemma's prefix-LM attention needs a vLLM version and attention backend that support it (FlexAttention,
  vLLM >= 0.11.1); older ones attend causally over the prompt and answer differently.
- Scores are exp(mean log-probability) of the sampled tokens as vLLM reports them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from PIL import Image

from jade.models.backends.base import Completion, Request


class VLLMBackend:
    name = "vllm"

    def __init__(self, model_dir: str, batch_size: int = 256, trust_remote_code: bool = False, **engine_args):
        try:
            import vllm
        except ImportError as e:
            raise RuntimeError(
                "generate.backend: vllm needs the vllm package, on a GPU machine: "
                "pip install -e '.[vllm]' (in its own environment: vllm pins its own torch)"
            ) from e
        args = {
            "model": model_dir,
            "enable_prefix_caching": True,
            "limit_mm_per_prompt": {"image": 1},
            "trust_remote_code": trust_remote_code,
            "max_num_seqs": max(batch_size, 1),
            "gpu_memory_utilization": float(os.environ.get("JADE_VLLM_GPU_MEMORY", "0.45")),
            "seed": 0,
        }
        args.update(engine_args)
        self.llm = vllm.LLM(**args)
        self._params = vllm.SamplingParams
        tok = self.llm.get_tokenizer()
        self.eos = {t for t in (tok.eos_token_id, tok.pad_token_id) if t is not None}
        self.fixed_length = False  # benchmarks: ignore EOS so every row decodes max_tokens

    def prepare(self, images: list[Image.Image]) -> list[Image.Image]:
        return list(images)  # vLLM encodes images itself (its multimodal cache dedups repeats)

    def sampling_params(self, r: Request):
        if r.greedy:
            return self._params(n=1, temperature=0.0, max_tokens=r.max_new_tokens, logprobs=0,
                                ignore_eos=self.fixed_length)  # fmt: skip
        return self._params(n=r.n, temperature=r.temperature, top_k=r.top_k if r.top_k > 0 else -1, seed=r.seed,
                            max_tokens=r.max_new_tokens, logprobs=0, ignore_eos=self.fixed_length)  # fmt: skip

    def generate(self, images: Sequence, requests: list[Request]) -> list[list[Completion]]:
        # PaliGemma's processor in vLLM inserts the image tokens and BOS; the prompt ends with a newline.
        prompts = [
            {"prompt": r.prompt + "\n", "multi_modal_data": {"image": images[r.image]}} for r in requests
        ]
        outs = self.llm.generate(prompts, [self.sampling_params(r) for r in requests], use_tqdm=False)
        return [[Completion(o.text.strip(), self._score(o)) for o in ro.outputs] for ro in outs]

    def _score(self, out) -> float:
        """exp(mean log-prob) of the generated tokens before EOS (of the EOS alone if there are none)."""
        pairs = list(zip(out.token_ids, out.logprobs or [], strict=False))
        body = [(t, lp) for t, lp in pairs if t not in self.eos] or pairs[:1]
        vals = [lp[t].logprob for t, lp in body if t in lp and math.isfinite(lp[t].logprob)]
        return math.exp(sum(vals) / len(vals)) if vals else 0.0
