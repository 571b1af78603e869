"""The vLLM engine behind the `vllm` backend, and the worker process that runs it in vLLM's own environment.

vLLM cannot be installed into the project's environment (it pins other torch and transformers versions), so
`models.backends.vllm.VLLMBackend` normally runs this file as a program with ``.venv-vllm/bin/python`` (made by
``make setup-vllm``) and talks to it over its stdin/stdout. Where ``import vllm`` works in the calling process
(a GPU machine with vllm installed into the same environment), the backend uses `Engine` in-process instead:
one mapping from requests to vLLM either way.

This file imports nothing from jade (it runs in the other environment, executed by path) and vLLM only
inside functions (it is also imported, without vLLM, by the main environment).

The protocol: messages are MessagePack maps of plain values (str, int, float, bytes, lists, maps), each
preceded by its length (8 bytes, little-endian): a format that carries data only, never code (no pickle on
any channel). Images travel as PNG bytes.

    worker -> {"device": "cpu" | "cuda" | ..., "vllm": version}      as soon as vLLM's platform is known
    parent -> {"op": "start", "args": {vllm.LLM arguments}, "env": {the caller's VLLM_*, HF_* ... variables}}
              or {"op": "close"} (the backend refused the checkpoint)
    worker -> {"ok": {"eos": [ids]}}                                 the engine is up
    parent -> {"op": "generate", "images": {index: png}, "requests": [dict], "ignore_eos": b}
    worker -> {"ok": [[[text, score, token_ids], ...], ...]}         one list of samples per request
    parent -> {"op": "close"}
Any failure in the worker answers {"error": traceback text} instead of "ok".
"""

from __future__ import annotations

import io
import math
import os
import struct
import sys
import traceback

# The attention rule (models/attention.py) each vLLM platform computes for PaliGemma, measured on vllm 0.32:
# the CPU attention backend (CPU_ATTN) ignores the multimodal prefix ranges, so attention is causal over the
# whole prompt; on CUDA, PaliGemma is an "mm-prefix LM" and vLLM only accepts attention backends that make the
# image span bidirectional (the prompt stays causal).
ENGINE_RULES = {"cpu": "causal", "cuda": "image"}


def device_type() -> str:
    from vllm.platforms import current_platform

    return str(current_platform.device_type)


def engine_args(
    model: str, device: str, batch_size: int, trust_remote_code: bool, overrides: dict, env=os.environ
) -> dict:
    """`vllm.LLM` arguments for one of our checkpoints (decided by the caller, from its environment ``env``);
    ``overrides`` (the caller's engine arguments) win."""
    args = {
        "model": model,
        "enable_prefix_caching": True,
        "limit_mm_per_prompt": {"image": 1},
        "trust_remote_code": trust_remote_code,
        "max_num_seqs": max(int(batch_size), 1),
        "seed": 0,
        # Scores as hf computes them: log-probabilities of the distribution a token was drawn from (after
        # temperature and top-K); greedy rows are scored on the raw logits either way.
        "logprobs_mode": "processed_logprobs",
    }
    if device == "cpu":
        # fp32 is exact and, without native bf16 (AVX2), faster than vLLM's default cast to bf16. The
        # attention backend is an engine argument in vLLM 0.32 (VLLM_ATTENTION_BACKEND is read nowhere).
        # A fixed key/value cache: vLLM's default instead wants 92% of the machine's memory free at start.
        gib = float(env.get("JADE_VLLM_KV_CACHE_GB") or env.get("VLLM_CPU_KVCACHE_SPACE") or 2)
        args.update(dtype="float32", attention_backend="CPU_ATTN", kv_cache_memory_bytes=int(gib * 2**30))
    else:
        # vLLM picks an attention backend that supports PaliGemma's bidirectional image span (and refuses
        # one that does not); the GPU memory share leaves room for a second model (generator + filter).
        args["gpu_memory_utilization"] = float(env.get("JADE_VLLM_GPU_MEMORY", "0.45"))
    args.update(overrides)
    return args


class Engine:
    """Requests (dicts with the fields of `models.backends.base.Request`) through one `vllm.LLM`, built with
    ``args`` (`engine_args`)."""

    def __init__(self, vllm, args: dict):
        self.args = args
        self.llm = vllm.LLM(**args)
        self._params = vllm.SamplingParams
        tok = self.llm.get_tokenizer()
        # hf stops at EOS and at the pad token; vLLM stops at EOS by itself, the pad token is added.
        self.eos = sorted({t for t in (tok.eos_token_id, tok.pad_token_id) if t is not None})

    def sampling_params(self, r: dict, ignore_eos: bool = False):
        common = {
            "max_tokens": r["max_new_tokens"],
            "logprobs": 0,
            "ignore_eos": ignore_eos,
            "stop_token_ids": [] if ignore_eos else list(self.eos),
        }
        if r["greedy"]:
            return self._params(n=1, temperature=0.0, **common)
        return self._params(
            n=r["n"],
            temperature=r["temperature"],
            top_k=r["top_k"] if r["top_k"] > 0 else 0,
            seed=r["seed"],
            **common,
        )

    def generate(self, images, requests: list[dict], ignore_eos: bool = False) -> list[list[list]]:
        """One list of [text, score, token ids] per request (``n`` samples, or one greedy answer).
        ``images``: anything indexable by the requests' ``image`` (PIL images)."""
        # PaliGemma's processor in vLLM inserts the image tokens and BOS; the prompt ends with a newline.
        prompts = [
            {"prompt": r["prompt"] + "\n", "multi_modal_data": {"image": images[r["image"]]}}
            for r in requests
        ]
        params = [self.sampling_params(r, ignore_eos) for r in requests]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        return [[[o.text.strip(), self.score(o), list(o.token_ids)] for o in ro.outputs] for ro in outs]

    def score(self, out) -> float:
        """exp(mean log-prob) of the generated tokens before EOS (of the first token if there are none)."""
        toks, lps = list(out.token_ids), list(out.logprobs or [])
        n = next((j for j, t in enumerate(toks) if t in self.eos), len(toks))
        vals = [lp[t].logprob for t, lp in zip(toks[: max(n, 1)], lps, strict=False) if t in lp]
        vals = [v for v in vals if math.isfinite(v)]
        return math.exp(sum(vals) / len(vals)) if vals else 0.0


# -- the worker process ------------------------------------------------------------------------------------


def send(f, obj) -> None:
    import msgpack

    data = msgpack.packb(obj, use_bin_type=True)
    f.write(struct.pack("<Q", len(data)))
    f.write(data)
    f.flush()


def recv(f):
    head = f.read(8)
    if len(head) < 8:
        raise EOFError("the other end closed the pipe")
    (n,) = struct.unpack("<Q", head)
    data = f.read(n)
    if len(data) < n:
        raise EOFError("the other end closed the pipe mid-message")
    import msgpack

    # maps keyed by image index: integer keys allowed (strict_map_key); tuples come back as lists
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def _decode_images(blobs: dict) -> dict:
    from PIL import Image

    images = {}
    for i, blob in blobs.items():
        img = Image.open(io.BytesIO(blob))
        img.load()
        images[i] = img
    return images


def _exit_with_parent() -> None:
    """End when the process that started this one is gone (a killed Ray actor), even mid-generation."""
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _quiet_thread_warning() -> None:
    """vLLM's CPU worker warns on every `torch.set_num_threads` call, and vLLM itself makes one per request
    batch (around multimodal processing): some 15 identical log lines per call. Drop that one message."""
    import logging

    logging.getLogger("vllm.v1.worker.cpu_worker").addFilter(
        lambda record: "torch.set_num_threads" not in record.getMessage()
    )


def main() -> int:
    _exit_with_parent()
    channel_in = sys.stdin.buffer
    channel_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever vLLM prints goes to stderr; stdout carries the protocol only
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine core in this process
    try:
        device = device_type()
        import vllm

        send(channel_out, {"device": device, "vllm": vllm.__version__})
        msg = recv(channel_in)
        if msg.get("op") != "start":
            return 0
        os.environ.update(msg.get("env") or {})  # the caller's settings now (this process may be a spare)
        _quiet_thread_warning()
        engine = Engine(vllm, msg["args"])
        send(channel_out, {"ok": {"eos": engine.eos}})
    except EOFError:
        return 0
    except BaseException:
        send(channel_out, {"error": traceback.format_exc()})
        return 1
    while True:
        try:
            msg = recv(channel_in)
        except EOFError:
            return 0  # the parent is gone
        if msg.get("op") != "generate":
            return 0
        try:
            images = _decode_images(msg["images"])
            send(channel_out, {"ok": engine.generate(images, msg["requests"], msg.get("ignore_eos", False))})
        except BrokenPipeError:
            return 0
        except Exception:
            send(channel_out, {"error": traceback.format_exc()})


if __name__ == "__main__":
    # Run by path, this file's folder heads sys.path, and its neighbour vllm.py (the backend) would shadow
    # the vllm package: drop it.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.exit(main())
