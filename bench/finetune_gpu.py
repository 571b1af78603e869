"""Fine-tuning memory and speed against the plan: the factory's own training loop (`models.train.train_loop`)
fine-tunes a PaliGemma of a given size (random weights, built from a config: nothing is downloaded) for a few
steps under a manifest role's training settings (default: cc3m's generator), and reports the measured peak
memory beside `jade plan`'s estimate (`models.memplan`) and the steps/s; on a GPU, beside the hf engine's
images/s under ``attention: image`` (`bench.gpu`, same size).

    python -m bench.finetune_gpu --out runs/bench                                   # a GPU machine: 3b-224
    MALLOC_MMAP_THRESHOLD_=65536 python -m bench.finetune_gpu --size mid --device cpu --out runs/bench/ft

Memory: on CUDA, ``torch.cuda.max_memory_allocated`` over the steps (allocated, not reserved); on a CPU, the
process's peak resident set (``ru_maxrss``) over the steps minus its resident set just before training, in a
fresh process (run the command once per setting). ``MALLOC_MMAP_THRESHOLD_`` keeps glibc from holding freed
blocks (its threshold otherwise grows to 32 MB, and freed tensors below it stay resident). Writes
finetune-<size>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from jade.app import plan as app_plan
from jade.models import factory, memplan
from jade.models.specs import Architecture
from jade.models.train import TrainJob, example_batch, train_loop

# a mid size that fits a laptop's memory and trains a step in seconds on 2 cores (the CPU check of the plan)
MID = {
    "vision": {
        "hidden_size": 256,
        "intermediate_size": 1024,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
    },
    "text": {
        "hidden_size": 512,
        "intermediate_size": 2048,
        "num_hidden_layers": 6,
        "num_attention_heads": 8,
        "num_key_value_heads": 1,
        "head_dim": 64,
        "vocab_size": 32000,
    },
    "image": 112,
    "patch": 14,
}
TINY = {
    "vision": {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 1, "num_attention_heads": 2},
    "text": {
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 32,
        "vocab_size": 2048,
    },
    "image": 32,
    "patch": 8,
}
CAPTIONS = ["a red circle", "a small blue square on the left", "two green triangles", "a big yellow star"]


def config_for(size: str, processor) -> dict:
    """The architecture to fine-tune, with the token ids of ``processor``."""
    if size == "3b-224":
        cfg = memplan.paligemma_3b_224().to_dict()
    else:
        from transformers import PaliGemmaConfig

        s = MID if size == "mid" else TINY
        cfg = PaliGemmaConfig().to_dict()
        cfg["vision_config"].update(s["vision"], image_size=s["image"], patch_size=s["patch"])
        cfg["text_config"].update(s["text"])
        cfg["vocab_size"] = s["text"]["vocab_size"]
        cfg["projection_dim"] = cfg["hidden_size"] = s["text"]["hidden_size"]
        cfg["vision_config"]["projection_dim"] = s["text"]["hidden_size"]
    tok = processor.tokenizer
    cfg.update(
        image_token_index=processor.image_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    cfg["text_config"].update(
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id
    )
    return cfg


def make_examples(folder: Path, n: int, image_size: int) -> tuple[str, list[str], list[str], list[str]]:
    """n (image, prefix, suffix) examples shaped like the generator's: dense captions with a box, questions,
    answers."""
    folder.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list] = {"image_path": [], "prefix": [], "suffix": []}
    for i in range(n):
        path = folder / f"{i}.png"
        Image.new("RGB", (image_size, image_size), (i * 37 % 256, i * 91 % 256, 128)).save(path)
        cap = CAPTIONS[i % len(CAPTIONS)]
        prefix, suffix = [
            ("caption en", f"<loc0{i % 10}12><loc0200><loc0{i % 7}40><loc0900> {cap}"),
            ("question en", f"what colour is {cap} in the picture?"),
            (f"answer en is there {cap}?", "yes"),
        ][i % 3]
        rows["image_path"].append(str(path))
        rows["prefix"].append(prefix)
        rows["suffix"].append(suffix)
    pq.write_table(pa.table(rows), folder / "examples.parquet")
    return str(folder / "examples.parquet"), rows["image_path"], rows["prefix"], rows["suffix"]


def workload(processor, paths, prefixes, suffixes, micro: int, batch: int) -> memplan.Workload:
    """The plan's workload of these examples: the longest text and target of the padded batch."""
    imgs = [Image.open(p).convert("RGB") for p in paths[:batch]]
    b = example_batch(processor, imgs, prefixes[:batch], suffixes[:batch], "cpu", "image")
    text = b["input_ids"].shape[1] - processor.image_seq_length
    targets = int((b["labels"][:, 1:] != -100).any(0).sum())
    return memplan.Workload(micro, batch, text, targets)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def run(
    out: Path,
    size: str = "3b-224",
    steps: int = 6,
    sets: list[str] | None = None,
    manifest: str = "cc3m",
    role: str = "generator",
    device: str | None = None,
    engine: bool | None = None,
) -> dict:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out.mkdir(parents=True, exist_ok=True)
    m = app_plan.load(manifest, sets)
    spec = getattr(m.models, role)
    train = dataclasses.replace(spec.train, steps=steps, warmup_steps=1, max_examples=None)
    s = MID if size == "mid" else TINY if size == "tiny" else {"image": 224, "patch": 14}
    data = out / f"data-{size}"
    examples, paths, prefixes, suffixes = make_examples(data, 2 * train.batch_size, s["image"])
    arch = Architecture(image_size=s["image"], patch_size=s["patch"], vocab_size=300)
    processor = factory.build_processor(CAPTIONS * 10 + prefixes + suffixes, arch)
    processor.save_pretrained(data / "processor")
    config = config_for(size, processor)
    job = TrainJob(
        examples=examples,
        out_dir=str(out / f"ckpt-{size}"),
        arch=arch,
        train=train,
        processor_dir=str(data / "processor"),
        config=config,
        use_gpu=device == "cuda",
        meta={"role": role},
    )
    w = workload(processor, paths, prefixes, suffixes, train.micro(), train.batch_size)
    settings = app_plan.role_settings(train, m, device)
    from transformers import PaliGemmaConfig

    cfg = PaliGemmaConfig.from_dict(config)
    counts = memplan.counts(memplan.meta_model(cfg), settings.freeze, settings.lora)
    planned = memplan.plan(cfg, w, settings, counts)

    peak = {"bytes": 0}
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_bytes()

    def record(_metrics: dict) -> None:  # at step 1 and the last step, before the checkpoint is written
        now = (
            torch.cuda.max_memory_allocated()
            if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        )
        peak["bytes"] = max(peak["bytes"], now - base)

    t0 = time.perf_counter()
    metrics = train_loop(job, report=record)
    wall = time.perf_counter() - t0
    shutil.rmtree(job.out_dir, ignore_errors=True)  # the checkpoint itself is not needed (12 GB at 3b-224)
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()  # the engine's model next
    report = {
        "size": size,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "manifest": manifest,
        "role": role,
        "settings": app_plan.describe(cfg, size, w, settings, counts),
        "steps": steps,
        "train_s": metrics["train_s"],
        "steps_per_s": steps / metrics["train_s"],  # includes the first step's warm-up
        "wall_s_with_build_and_save": wall,
        "measured_peak_gib": peak["bytes"] / memplan.GIB,
        "measured_with": "torch.cuda.max_memory_allocated"
        if device == "cuda"
        else "peak RSS delta (ru_maxrss)",
        "plan": planned.to_json(),
        "plan_over_measured": planned.peak / max(1, peak["bytes"]),
    }
    if engine if engine is not None else device == "cuda":
        from bench import gpu

        hf = gpu.run(
            out,
            size if size in gpu.SIZES else "tiny",
            images=64 if device == "cuda" else 2,
            batch=256,
            backend="hf",
            attention="image",
        )
        report["hf_engine_images_per_s"] = hf["images_per_s"]
    (out / f"finetune-{size}.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench/finetune")
    p.add_argument("--size", choices=["3b-224", "mid", "tiny"], default="3b-224")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--manifest", default="cc3m")
    p.add_argument("--role", choices=["generator", "filter"], default="generator")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a manifest key")
    p.add_argument("--device", choices=["cuda", "cpu"])
    p.add_argument("--no-engine", action="store_true", help="skip the hf engine's images/s")
    a = p.parse_args(argv)
    r = run(Path(a.out), a.size, a.steps, a.set, a.manifest, a.role, a.device, False if a.no_engine else None)
    print(json.dumps(r, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
