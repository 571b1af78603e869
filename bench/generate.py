"""Generate + filter benchmark: the factory's workers against a plain per-question `transformers.generate` loop.

Both paths run in this one process, side by side, on the same tiny sample-world models and the same images:

- factory: the generate and filter stages' own shard workers (`stages.generate.Generator`,
  `stages.filter.FilterWorker`) with the hf backend, exactly as a run uses them;
- naive: for each image, one `generate` per sampled prompt (captions, one per question type, with
  `num_return_sequences`), then one greedy `generate` per question with the generator and one with the
  filter model, batch size 1.

The naive loop answers the questions the factory sampled, so the greedy answers, filter answers and verdicts
of the two paths can be compared one for one (`outputs_identical`). Vision-encoder passes are counted with a
forward hook on each model's vision tower. Peak memory of the generate stage is measured in fresh
subprocesses at 1x and 4x the images (one process each, so the figures do not mix).

    python -m bench.generate --out runs/bench [--images 24] [--models runs/sample/checkpoints]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

from jade.app.runner import run_manifest
from jade.formats import shards
from jade.models import factory, tasks
from jade.models.backends.hf import _vision_tower
from jade.models.vqa_normalize import answers_match
from jade.pipeline.config import load_manifest
from jade.pipeline.executor import LocalExecutor
from jade.pipeline.rundir import RunDir, read_json
from jade.pipeline.shard_stage import load_images
from jade.stages.filter import Filter, FilterWorker
from jade.stages.generate import Generate, Generator, usable_keys

log = logging.getLogger("jade")
SMALL_WORLD = ["sample_world.vg_images=20", "sample_world.gqa_images=20", "sample_world.vqa_train_images=20",
               "sample_world.vqa_val_images=5"]  # fmt: skip


def world_overrides(images: int) -> list[str]:
    return [*SMALL_WORLD, f"sample_world.cc3m_images={images}", "sample_world.cc3m_shards=2"]


def find_models(out: Path, models: str | None) -> Path:
    """Trained sample-world checkpoints: --models, else runs/sample's (`make generate`), else a short run."""
    for cand in [models, "runs/sample/checkpoints"]:
        if cand and all((Path(cand) / r / "jade_model.json").exists() for r in ("generator", "filter")):
            return Path(cand)
    if models:
        raise SystemExit(f"bench: no generator/filter checkpoints under {models}")
    log.info("bench: no trained sample-world models found; training short ones (400/300 steps)")
    run = out / "models"
    run_manifest("sample", str(run), ["models.generator.train.steps=400", "models.filter.train.steps=300"],
                 ["ingest", "finetune_generator", "finetune_filter"], executor=LocalExecutor())  # fmt: skip
    return run / "checkpoints"


def make_run(out: Path, name: str, images: int, models: Path) -> Path:
    """A run directory with the images ingested and the models in place (nothing generated yet)."""
    root = out / name
    run_manifest("sample", str(root), world_overrides(images), ["ingest"], executor=LocalExecutor())
    for role in ("generator", "filter"):
        dst = root / "checkpoints" / role
        if not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(models / role, dst)
    return root


def shard_items(root: Path) -> list[dict]:
    items = read_json(RunDir(root).work("ingest") / "shards.json") or []
    return [
        {"shard_id": s["shard_id"], "shard": {k: s[k] for k in ("shard_id", "url", "format")}} for s in items
    ]


def run_factory(
    root: Path, threads: int, stages: tuple[str, ...] = ("generate", "filter"), on_loaded=None
) -> dict:
    """The stages' own shard workers, in process; returns seconds and the backends' counters."""
    run = RunDir(root)
    m = load_manifest("sample", world_overrides(0), {"SAMPLE_WORLD": str(run.world)})
    for st in stages:
        shutil.rmtree(run.state / st, ignore_errors=True)  # fresh: no completion records to skip on
    res = {}
    workers = {"generate": (Generator, Generate().settings(m), m.resources.generate.batch_size),
               "filter": (FilterWorker, Filter().settings(m), m.resources.filter.batch_size)}  # fmt: skip
    for st in stages:
        cls, settings, bs = workers[st]
        worker = cls(str(root), f"bench-{st}", settings, bs, threads)
        worker.backend  # noqa: B018 - load the model before the clock starts (the filter loads it lazily)
        if on_loaded:
            on_loaded()
        t0 = time.perf_counter()
        for item in shard_items(root):
            rec = worker(item)
            if rec.get("error"):
                raise RuntimeError(f"{st}: {rec['error']}")
        res[st] = {"seconds": time.perf_counter() - t0, "vision_rows": worker.backend.vision_rows,
                   "prefill_tokens": worker.backend.prefill_tokens}  # fmt: skip
    return res


def factory_outputs(root: Path) -> dict:
    """(key, question) -> (generator answer, filter answer, kept) for every pair the generator answered."""
    run, out = RunDir(root), {}
    for f in sorted(run.work("filter").glob("*.parquet")):
        for row in pq.read_table(f).to_pylist():
            for q in row["qa"]:
                out[(row["key"], q["question"])] = (q["answer"], q["filter_answer"], True)
    for f in sorted(run.rejected.glob("*.parquet")):
        for r in pq.read_table(f).to_pylist():
            if r["reason"] in ("answer mismatch", "low filter score", "empty answer"):
                out[(r["key"], r["question"])] = (r["answer"], r["filter_answer"], False)
    return out


class Naive:
    """The plain loop: one `transformers.generate` call per prompt, batch size 1."""

    def __init__(self, model_dir: Path):
        self.model, self.proc = factory.load(str(model_dir))
        self.tok = self.proc.tokenizer
        self.vision_rows = self.prefill_tokens = 0
        _vision_tower(self.model).register_forward_hook(self._count)

    def _count(self, module, args, output):
        self.vision_rows += args[0].shape[0]

    @torch.inference_mode()
    def __call__(
        self, image, prompt: str, max_new: int, n: int = 0, top_k: int = 0, temp: float = 1.0
    ) -> list[str]:
        batch = self.proc(text=[f"<image>{prompt}"], images=[image], return_tensors="pt")
        batch.pop("labels", None)
        kw = (
            {"do_sample": True, "top_k": top_k or None, "temperature": temp, "num_return_sequences": n}
            if n
            else {"do_sample": False}
        )
        self.prefill_tokens += batch["input_ids"].numel() * max(n, 1)
        seqs = self.model.generate(**batch, max_new_tokens=max_new, **kw)[:, batch["input_ids"].shape[1] :]
        texts = []
        for toks in seqs.tolist():
            stop = next(
                (j for j, t in enumerate(toks) if t in (self.tok.eos_token_id, self.tok.pad_token_id)),
                len(toks),
            )
            texts.append(tasks.clean_text(self.tok.decode(toks[:stop], skip_special_tokens=True).strip()))
        return texts


def run_naive(root: Path, wanted: dict, settings: dict, rule: dict) -> dict:
    run = RunDir(root)
    gen, fil = Naive(run.checkpoint("generator")), Naive(run.checkpoint("filter"))
    by_key: dict[str, list[str]] = {}
    for key, question in wanted:
        by_key.setdefault(key, []).append(question)
    mt, got, images = settings["max_new_tokens"], {}, 0
    t0 = time.perf_counter()
    for item in shard_items(root):
        shard = shards.ShardRef(**item["shard"])
        for key, img, _ in load_images(shard, set(usable_keys(run, shard.shard_id))):
            images += 1
            gen(
                img,
                tasks.CAPTION_PROMPT,
                mt["caption"],
                settings["captions"],
                settings["top_k"],
                settings["temperature"],
            )
            for qtype, n in settings["questions"].items():
                gen(
                    img,
                    tasks.question_prompt(qtype),
                    mt["question"],
                    n,
                    settings["top_k"],
                    settings["temperature"],
                )
            for q in by_key.get(key, []):
                a = gen(img, tasks.answer_prompt(q), mt["answer"])[0]
                fa = fil(img, tasks.answer_prompt(q), rule["max_answer_tokens"])[0] if a else None
                got[(key, q)] = (a, fa, bool(a) and answers_match(a, fa, rule["normalization"]))
    return {"seconds": time.perf_counter() - t0, "images": images, "outputs": got,
            "vision_rows": gen.vision_rows + fil.vision_rows, "prefill_tokens": gen.prefill_tokens + fil.prefill_tokens}  # fmt: skip


def peak_rss_mb(root: Path, threads: int) -> tuple[float, float, float]:
    """Of the generate stage on `root`, in a fresh process, MB: (peak RSS of the whole process, peak RSS
    while the stage ran, RSS once the model was loaded). The second is read after resetting the kernel's
    high-water mark at the third, so their difference is what the images themselves cost."""
    cmd = [sys.executable, "-m", "bench.generate", "--rss-of", str(root), "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    total, stage, loaded = out.stdout.strip().splitlines()[-1].split()
    return float(total), float(stage), float(loaded)


def _vm_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_LOADED: dict[str, float] = {}


def _reset_hwm() -> None:
    """Once the model is loaded: note the peak so far and the current RSS, then reset the high-water mark
    (Linux `clear_refs` 5) so the next peak is the stage's own."""
    _LOADED.update(peak=_vm_mb("VmHWM"), rss=_vm_mb("VmRSS"))
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def run(
    out: Path, images: int = 24, models: str | None = None, threads: int | None = None, rounds: int = 3
) -> dict:
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = find_models(out, models)
    r1 = make_run(out, "generate-1x", images, model_dir)
    r4 = make_run(out, "generate-4x", 4 * images, model_dir)
    m = load_manifest("sample", world_overrides(images), {"SAMPLE_WORLD": str(RunDir(r1).world)})
    rule = Filter().settings(m)
    # Interleaved rounds, best time of each path: the machine's other load hits both alike.
    fast_runs, naive_runs = [], []
    for _ in range(rounds):
        fast_runs.append(run_factory(r1, threads))
        mine = factory_outputs(r1)
        naive_runs.append(run_naive(r1, mine, Generate().settings(m), rule))
    fast = min(fast_runs, key=lambda f: f["generate"]["seconds"] + f["filter"]["seconds"])
    naive = min(naive_runs, key=lambda r: r["seconds"])
    n = naive["images"]
    theirs = naive_runs[-1]["outputs"]  # the same round as `mine`
    identical = mine.keys() == theirs.keys() and all(mine[k] == theirs[k] for k in mine)
    diffs = [{"key": k[0], "question": k[1], "factory": mine.get(k), "naive": theirs.get(k)}
             for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)][:10]  # fmt: skip
    secs = fast["generate"]["seconds"] + fast["filter"]["seconds"]
    rss1, rss4 = peak_rss_mb(r1, threads), peak_rss_mb(r4, threads)
    report = {
        "images": n,
        "questions_answered": len(mine),
        "answers_nonempty": sum(1 for a, _, _ in mine.values() if a),
        "filter_answers_nonempty": sum(1 for _, fa, _ in mine.values() if fa),
        "images_per_s": n / secs,
        "naive_images_per_s": n / naive["seconds"],
        "speedup_vs_naive": naive["seconds"] / secs,
        "vision_encoder_passes_per_image": max(fast[s]["vision_rows"] for s in fast) / n,
        "vision_encoder_passes_per_image_by_model": {
            "generator": fast["generate"]["vision_rows"] / n,
            "filter": fast["filter"]["vision_rows"] / n,
        },  # fmt: skip
        "naive_vision_encoder_passes_per_image": naive["vision_rows"] / n,
        "prefill_tokens_per_image": sum(fast[s]["prefill_tokens"] for s in fast) / n,
        "naive_prefill_tokens_per_image": naive["prefill_tokens"] / n,
        "outputs_identical": identical,
        "output_differences": diffs,
        "seconds": {
            "factory_generate": fast["generate"]["seconds"],
            "factory_filter": fast["filter"]["seconds"],
            "naive": naive["seconds"],
        },  # fmt: skip
        "peak_rss_mb_1x": rss1[0],
        "peak_rss_mb_4x": rss4[0],
        "stage_peak_rss_mb_1x": rss1[1],
        "stage_peak_rss_mb_4x": rss4[1],
        "rss_after_model_load_mb_1x": rss1[2],
        "rss_after_model_load_mb_4x": rss4[2],
        "images_1x": n,
        "images_4x": len(usable(r4)),
        "threads": threads,
        "rounds": rounds,
        "seconds_all_rounds": {
            "factory": [f["generate"]["seconds"] + f["filter"]["seconds"] for f in fast_runs],
            "naive": [r["seconds"] for r in naive_runs],
        },  # fmt: skip
        "models": str(model_dir),
    }
    report["rss_ratio_4x_over_1x"] = report["peak_rss_mb_4x"] / report["peak_rss_mb_1x"]
    report["stage_rss_ratio_4x_over_1x"] = report["stage_peak_rss_mb_4x"] / report["stage_peak_rss_mb_1x"]
    (out / "generate.json").write_text(json.dumps(report, indent=2))
    return report


def usable(root: Path) -> list[str]:
    return [k for item in shard_items(root) for k in usable_keys(RunDir(root), item["shard_id"])]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--images", type=int, default=24, help="images at 1x (the memory check also runs 4x)")
    p.add_argument("--models", help="directory with generator/ and filter/ checkpoints")
    p.add_argument("--threads", type=int)
    p.add_argument(
        "--rounds", type=int, default=3, help="interleaved timing rounds; the best of each path counts"
    )
    p.add_argument("--rss-of", help=argparse.SUPPRESS)  # internal: run generate on a run dir, print peak RSS
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if a.rss_of:
        torch.set_num_threads(a.threads or 1)
        run_factory(Path(a.rss_of), a.threads or 1, ("generate",), on_loaded=_reset_hwm)
        stage_peak = _vm_mb("VmHWM")
        print(max(stage_peak, _LOADED.get("peak", 0.0)), stage_peak, _LOADED.get("rss", 0.0))
        return 0
    report = run(Path(a.out), a.images, a.models, a.threads, a.rounds)
    print(json.dumps({k: v for k, v in report.items() if k != "output_differences"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
