"""GPU benchmark: a full-size PaliGemma (SigLIP-So400m/14 at 224 px + Gemma-2B, random weights, built from a
config, so nothing is downloaded) through the factory's hf engine under an attention rule (`--attention`,
default ``image``: the image's keys and values computed once per image and model, every prompt prefilling only
its own tokens), with fixed output lengths (EOS disabled), in images/s end to end per GPU, and compared with
the GPU's compute and memory limits. In the same call, where vLLM can be imported (``--backend auto``, the
default), the same requests go through the `vllm` backend on the same weights saved under the same rule (vLLM
on a GPU computes ``image``; a rule it does not compute is recorded as refused, with the engine's message).

    python -m bench.gpu --out runs/bench [--images 256] [--batch 256] [--attention image]   # a GPU machine
    python -m bench.gpu --size tiny --images 4                                               # smoke run, CPU

Per image, the JADE workload of the sample manifest: 6 dense captions (20 tokens) and 9 questions (20 tokens)
sampled, 9 greedy answers by the generator (8 tokens) and 9 by the filter (8 tokens). Writes gpu-hf.json,
gpu-vllm.json (when vLLM ran or refused) and gpu.json (both).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from jade.models import attention as attention_rules
from jade.models import factory
from jade.models.backends.base import Request
from jade.models.backends.hf import HFBackend
from jade.models.specs import Architecture

# (vision: hidden, layers, heads, mlp; text: hidden, layers, heads, kv heads, head_dim, mlp; image, patch, vocab)
SIZES = {
    "3b-224": dict(
        vision=(1152, 27, 16, 4304), text=(2048, 18, 8, 1, 256, 16384), image=224, patch=14, vocab=257216
    ),
    "tiny": dict(vision=(64, 1, 2, 256), text=(64, 1, 2, 1, 32, 256), image=32, patch=8, vocab=512),
}
# Peak dense bf16 tensor FLOP/s and HBM bandwidth of GPUs we may be lent (vendor data sheets).
GPU_LIMITS = {"H200": (989e12, 4.8e12), "H100": (989e12, 3.35e12), "A100": (312e12, 2.0e12)}


def build(size: str, device: str, dtype: torch.dtype, tmp: Path):
    from transformers import AutoModelForImageTextToText, PaliGemmaConfig

    s = SIZES[size]
    (vh, vl, vn, vm), (th, tl, tn, tkv, hd, tm) = s["vision"], s["text"]
    arch = Architecture(
        image_size=s["image"],
        patch_size=s["patch"],
        vision_hidden=64,
        vision_layers=1,
        text_hidden=64,
        text_layers=1,
        head_dim=32,
        vocab_size=300,
    )
    texts = [
        "dense caption",
        "question yes/no",
        "question number",
        "question other",
        "answer en is it red?",
    ] * 20
    processor = factory.build_processor(texts, arch)  # a small tokenizer: ids stay below the model's vocab
    tok = processor.tokenizer
    cfg = PaliGemmaConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": vh,
            "num_hidden_layers": vl,
            "num_attention_heads": vn,
            "intermediate_size": vm,
            "image_size": s["image"],
            "patch_size": s["patch"],
        },
        text_config={
            "model_type": "gemma",
            "hidden_size": th,
            "num_hidden_layers": tl,
            "num_attention_heads": tn,
            "num_key_value_heads": tkv,
            "head_dim": hd,
            "intermediate_size": tm,
            "vocab_size": s["vocab"],
        },
        image_token_index=processor.image_token_id,
        vocab_size=s["vocab"],
        projection_dim=th,
        hidden_size=th,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(cfg, dtype=dtype)
    return model.eval(), processor


def workload(n_images: int) -> list[list[Request]]:
    """The per-image requests: the sampled phase, then the greedy answers (generator, then filter)."""
    sampled, answers = [], []
    for i in range(n_images):
        sampled.append(Request(i, "dense caption", 20, n=6, greedy=False, top_k=20, seed=i))
        for qtype, n in (("yes/no", 3), ("number", 2), ("other", 4)):
            sampled.append(Request(i, f"question {qtype}", 20, n=n, greedy=False, top_k=20, seed=i))
        answers += [Request(i, f"answer en is object {q} of image {i} red?", 8) for q in range(9)]
    return [sampled, answers]


def vllm_available() -> str | None:
    """None when `import vllm` works here, else why not (`--backend auto` runs vLLM only where it imports)."""
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        return f"vllm is not importable here ({e})"
    return None


def run(
    out: Path,
    size: str = "3b-224",
    images: int = 256,
    batch: int = 256,
    backend: str = "auto",
    attention: str = "image",
) -> dict:
    """The hf engine (unless ``backend`` is vllm), then vLLM beside it (``vllm``, or ``auto`` where it imports).
    Returns the hf report (or vLLM's, with ``backend="vllm"``) with the other under ``"vllm"``."""
    rule = attention_rules.check(attention, "--attention")
    out.mkdir(parents=True, exist_ok=True)
    reports: dict = {}
    if backend in ("hf", "auto"):
        reports["hf"] = run_engine(out, size, images, batch, "hf", rule)
    if backend == "vllm" or (backend == "auto" and not (why := vllm_available())):
        reports["vllm"] = run_engine(out, size, images, batch, "vllm", rule)
    elif backend == "auto":
        reports["vllm"] = {"backend": "vllm", "status": "skipped", "reason": why}
    (out / "gpu.json").write_text(json.dumps(reports, indent=2))
    if "hf" not in reports:
        return reports["vllm"]
    return {**reports["hf"], "vllm": reports.get("vllm")}


def run_engine(out: Path, size: str, images: int, batch: int, backend: str, rule: str) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model, processor = build(size, device, dtype, out)
    params = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    imgs = [Image.new("RGB", (256, 256), (i * 37 % 256, i * 91 % 256, 128)) for i in range(images)]
    base = {
        "size": size,
        "backend": backend,
        "attention": rule,
        "images": images,
        "batch_rows": batch,
        "date": time.strftime("%Y-%m-%d"),
    }
    if backend == "vllm":
        from jade.models.backends.vllm import VLLMBackend

        ckpt = out / f"gpu-{size}-{rule}"
        factory.save(model, processor, ckpt, {"role": "bench", "attention": rule})
        del model
        if device == "cuda":
            torch.cuda.empty_cache()
        try:
            eng = VLLMBackend(str(ckpt), batch_size=batch)
        except attention_rules.AttentionRuleError as e:
            report = {**base, "status": "refused", "error": str(e)}
            (out / "gpu-vllm.json").write_text(json.dumps(report, indent=2))
            return report
        eng.fixed_length = True  # ignore EOS: every row decodes its max_tokens
    else:
        eng = HFBackend(model, processor, batch_size=batch, device=device, attention=rule)
        eng.eos = set()  # fixed output lengths: every row decodes its max_new_tokens

    def run_once(n: int) -> None:
        sampled, answers = workload(n)
        prepared = eng.prepare(imgs[:n])
        eng.generate(prepared, sampled)
        eng.generate(prepared, answers)
        eng.generate(eng.prepare(imgs[:n]), answers)  # the filter: a second model of the same size

    def counts() -> dict:
        return {k: getattr(eng, k, None) for k in ("vision_rows", "prefill_tokens", "image_prefills")}

    try:
        run_once(min(images, 4))  # warm-up: kernels, allocator, caches
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        before = counts()
        t0 = time.perf_counter()
        run_once(images)
        if device == "cuda":
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        after = counts()
    finally:
        if hasattr(eng, "close"):
            eng.close()
    # Work per image: prefill tokens (image + prompt) and decoded tokens, 2 FLOPs per parameter per token.
    img_tokens = processor.image_seq_length
    decoded = 6 * 20 + 9 * 20 + 2 * 9 * 8
    prefills = 4 + 2 * 9
    prompt = 8  # estimated prompt tokens, where the engine does not count them (vLLM)
    if rule == "prefix":  # every prompt prefills the image's tokens with its own
        prefill_tokens = prefills * (img_tokens + prompt)
    else:  # the image once per model (generator, filter), then the prompts' own tokens
        prefill_tokens = 2 * img_tokens + prefills * prompt
    vision_rows = 2  # one pass per image and model
    if after["prefill_tokens"] is not None:  # the hf engine's counters: what it really computed
        prefill_tokens = (after["prefill_tokens"] - before["prefill_tokens"]) / images
        vision_rows = (after["vision_rows"] - before["vision_rows"]) / images
    text_tokens = prefill_tokens + decoded
    flops = 2 * (params - vision) * text_tokens + 2 * vision * img_tokens * vision_rows
    report = {
        **base,
        "status": "ran",
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "seconds": secs,
        "images_per_s": images / secs,
        "params": params,
        "tokens_per_image": text_tokens,
        "prefill_tokens_per_image": prefill_tokens,
        "model_flops_per_image": flops,
        "achieved_tflops": flops * images / secs / 1e12,
    }
    if after["prefill_tokens"] is not None:
        report.update({f"{k}_per_image": (after[k] - before[k]) / images for k in after})
    if device == "cuda":
        report["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        name = report["device"]
        limits = next((v for k, v in GPU_LIMITS.items() if k in name), None)
        if limits:
            peak, bw = limits
            report["mfu"] = report["achieved_tflops"] * 1e12 / peak
            # Decode is memory-bound: each step reads the weights once for the whole batch of rows.
            steps_per_image = decoded / min(batch, images * 15)
            report["weight_read_bound_images_per_s"] = bw / (params * 2 * steps_per_image)
    (out / f"gpu-{backend}.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--size", choices=sorted(SIZES), default="3b-224")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--batch", type=int, default=256, help="decode rows per batch")
    p.add_argument(
        "--backend",
        choices=["auto", "hf", "vllm"],
        default="auto",
        help="auto: hf, and vLLM beside it where vllm imports",
    )
    p.add_argument("--attention", choices=list(attention_rules.RULES), default="image")
    a = p.parse_args(argv)
    print(json.dumps(run(Path(a.out), a.size, a.images, a.batch, a.backend, a.attention), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
