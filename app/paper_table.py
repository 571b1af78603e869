"""The paper's claims, measured: pretrain on one factory run's dataset under each setting, several seeds each,
score every checkpoint on downstream benchmarks with clean truth, and write the table with its power.

    python -m jade.app.paper_table runs/sample-paper [--quick] [--seeds 0,1,2] [--settings a,b,c,...]

Settings (one budget for all, fixed before any was run; docs/pretraining.md says why):
  a            alt-text only                          (JADE's baseline)
  b            + the generated, filtered QA and dense captions   (JADE)
  c            + the generated QA without filtering (the rejected pairs added back)
  b_uniform    b with uniform task mixing instead of dynamic     (Dynamic Pretraining's ablation)
  b_itc_regions  b with ITC on the dense captions too (one caption of the whole image made of them), not
               on the alt-text alone                             (CLIP with Quality Captions)
Differences, paired over seeds: b-a, b-c, dynamic-uniform (b - b_uniform), itc_regions-itc_alt
(b_itc_regions - b).

Benchmarks: written by the sample world into DIR/bench (`sampleworld.benchmarks`: own random streams, checked
byte for byte against every image of DIR/world); VQA v2 val comes from the run's own world (DIR/run.json).
Every run lands in DIR/paper_table/<setting>/seed<k>/ (metrics.json, checkpoint; its log beside it); a rerun skips the
runs whose metrics.json has the same settings, resumes a run from its checkpoint, and only re-evaluates a finished
checkpoint when nothing but the evaluation's settings changed (`PretrainConfig.EVAL_FIELDS`). Runs go in parallel,
one per CPU core (one on a GPU, which each run then uses). The table: DIR/paper_table.md and .json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

from jade.app.manifest import BASES_DIR
from jade.app.paper_render import render, table_json
from jade.models.pretrain.config import PretrainConfig

log = logging.getLogger("jade")

SETTINGS = {  # name -> (row label, settings over the common ones)
    "a": ("(a) alt-text only", {"data": "alttext"}),
    "b": ("(b) + filtered QA & dense captions", {"data": "filtered"}),
    "c": ("(c) + unfiltered QA (rejected added back)", {"data": "unfiltered"}),
    "b_uniform": ("(b), uniform mixing instead of dynamic", {"data": "filtered", "mixing": "uniform"}),
    "b_itc_regions": (
        "(b), ITC on the dense captions as well as the alt-text",
        {"data": "filtered", "itc_texts": ["alttext", "regions"]},
    ),
}
DIFFERENCES = {  # claim -> (setting, the setting it is compared with)
    "b-a": ("b", "a"),
    "b-c": ("b", "c"),
    "dynamic-uniform": ("b", "b_uniform"),
    "itc_regions-itc_alt": ("b_itc_regions", "b"),
}
# the common settings of every run: the base's vision tower as the shared start, a fresh 2-layer decoder
COMMON = {
    "arch": {
        "image_size": 48,
        "patch_size": 16,
        "vision_hidden": 128,
        "vision_layers": 2,
        "text_hidden": 128,
        "text_layers": 2,
        "head_dim": 32,
        "kv_heads": 1,
        "vocab_size": 1000,
    },
    "tasks": ["itc", "caption", "completion", "vqa", "dense"],
    "itc_batch": 32,
    "merge_lm_tasks": True,
    "batch_size": 32,
    "lr": 1e-3,
    "warmup_steps": 100,
    "eval_fraction": 0.0,  # every dataset image pretrains: the benchmarks are images of their own
    "checkpoint_every": 500,
    "log_every": 100,
    "threads": 1,
}
BUDGETS = {  # the same for every setting and seed
    "full": {
        "steps": 2500,
        "vqa_steps": 2000,
        "vqa_eval_questions": 3000,
        "downstream": {
            "retrieval_steps": 300,
            "caption_steps": 300,
            "region_steps": 300,
            "caption_images": 1000,
            "region_refs": 1000,
        },
    },
    "quick": {
        "steps": 150,
        "vqa_steps": 40,
        "vqa_eval_questions": 300,
        "downstream": {
            "retrieval_steps": 40,
            "caption_steps": 40,
            "region_steps": 40,
            "caption_images": 100,
            "region_refs": 200,
        },
    },
}
QUICK_BENCH = {
    "test_images": 200,
    "caption_train_images": 200,
    "region_train_images": 200,
    "region_test_images": 100,
}


def run_config(setting: str, seed: int, budget: dict, bench: Path) -> PretrainConfig:
    base = str(Path(BASES_DIR) / "sampleworld-tiny")
    d = {
        **COMMON,
        **budget,
        **SETTINGS[setting][1],
        "seed": seed,
        "benchmarks": str(bench),
        "init_vision": base,
    }
    return PretrainConfig.from_dict(json.loads(json.dumps(d)))


def _same(out: Path, cfg: PretrainConfig, name: str) -> bool:
    try:
        return json.loads((out / name).read_text())["config"] == cfg.to_dict()
    except (OSError, KeyError, ValueError):
        return False


def one_run(run_dir: str, out: str, cfg_dict: dict, use_gpu: bool) -> dict:
    """One setting and seed, in its own process: pretrain (resuming a checkpoint of the same settings),
    evaluate; the run's log goes to out.log beside the run's folder."""
    from jade.app.pretrain import run_pretrain
    from jade.pipeline.executor import LocalExecutor

    out_p = Path(out)
    out_p.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out_p.with_suffix(".log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.getLogger("jade").handlers[:] = [handler]
    logging.getLogger("jade").setLevel(logging.INFO)
    cfg = PretrainConfig.from_dict(cfg_dict)
    try:
        state = json.loads((out_p / "checkpoint" / "state.json").read_text())
        trained = PretrainConfig.from_dict(state["config"]).training_dict() == cfg.training_dict()
    except (OSError, KeyError, ValueError):
        state, trained = {}, False
    # same training settings: resume, or only re-evaluate a finished checkpoint (a new evaluation budget)
    eval_only = trained and int(state.get("step", 0)) >= cfg.steps
    t0 = time.time()
    m = run_pretrain(
        run_dir, cfg, LocalExecutor(), out=out_p, fresh=not trained, eval_only=eval_only, use_gpu=use_gpu
    )
    return {"minutes": (time.time() - t0) / 60, **m}


def die_with_parent(parent: int) -> None:
    """Pool initializer: a run's process ends when the table's process does (killed or stopped), so that no run
    goes on training and writing its folder on its own (Linux: PR_SET_PDEATHSIG; elsewhere nothing)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent was gone before the line above
        os._exit(1)


def _line(done: int, total: int, name: str, seed: int, m: dict, eta_min: float) -> str:
    keys = ("vqa_accuracy", "retrieval_i2t_r1", "retrieval_t2i_r1", "cider", "region_accuracy")
    vals = " ".join(
        f"{k.split('_')[0] if k != 'retrieval_t2i_r1' else 't2i'}={m[k]:.3f}"
        if m.get(k) is not None
        else f"{k}=n/a"
        for k in keys
    )
    return f"paper table [{done}/{total}] {name} seed {seed}: {m.get('minutes', 0):.1f} min, {vals}; ETA {eta_min:.0f} min"


def run_all(
    run_dir: Path, runs: list[tuple[str, int, PretrainConfig, Path]], workers: int, use_gpu: bool
) -> dict:
    """Every (setting, seed) run, ``workers`` at a time; finished runs with the same settings are read back."""
    results: dict[tuple[str, int], dict] = {}
    todo = []
    for name, seed, cfg, out in runs:
        if _same(out, cfg, "metrics.json"):
            results[name, seed] = json.loads((out / "metrics.json").read_text())
        else:
            todo.append((name, seed, cfg, out))
    if results:
        log.info("paper table: %d of %d runs already done with these settings", len(results), len(runs))
    t0, done, total = time.time(), len(results), len(runs)
    ctx = get_context("spawn")  # fresh interpreters: no torch or Ray state shared with this one
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=die_with_parent, initargs=(os.getpid(),)
    ) as pool:
        futures = {
            pool.submit(one_run, str(run_dir), str(o), c.to_dict(), use_gpu): (n, s) for n, s, c, o in todo
        }
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                name, seed = futures[f]
                results[name, seed] = m = f.result()
                done += 1
                ran = done - (total - len(todo))
                eta = (time.time() - t0) / 60 / ran * (total - done)
                log.info("%s", _line(done, total, name, seed, m, eta))
    return results


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    p = argparse.ArgumentParser(
        prog="paper_table", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument(
        "dir", help="a finished factory run (dataset/, rejected/, run.json, world/): runs/sample-paper"
    )
    p.add_argument(
        "--quick", action="store_true", help="a smoke run: tiny budget and benchmarks (numbers not quoted)"
    )
    p.add_argument("--seeds", help="default: 0,1,2 (quick: 0,1)")
    p.add_argument("--settings", default=",".join(SETTINGS), help=f"of {', '.join(SETTINGS)}")
    p.add_argument("--workers", type=int, help="runs at once (default: 1 on a GPU, else one per CPU core)")
    p.add_argument("--out", help="the table's files (default: DIR/paper_table[-quick].{md,json})")
    args = p.parse_args(argv)
    import torch

    from jade.app.paper_data import benchmarks_for, chance_baselines

    run_dir = Path(args.dir)
    if not (run_dir / "dataset").is_dir() or not (run_dir / "run.json").exists():
        p.error(f"{run_dir}: not a finished factory run (make paper-data makes runs/sample-paper)")
    names = [n.strip() for n in args.settings.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        p.error(f"--settings: unknown {unknown} (known: {', '.join(SETTINGS)})")
    seeds = [int(s) for s in (args.seeds or ("0,1" if args.quick else "0,1,2")).split(",")]
    kind = "quick" if args.quick else "full"
    tag = "paper_table-quick" if args.quick else "paper_table"
    use_gpu = torch.cuda.is_available()
    workers = args.workers or (1 if use_gpu else max(1, os.cpu_count() or 1))
    t0 = time.time()
    bench, overlap = benchmarks_for(
        run_dir, QUICK_BENCH if args.quick else {}, run_dir / f"bench{'-quick' if args.quick else ''}"
    )
    budget = BUDGETS[kind]
    runs = [
        (n, s, run_config(n, s, budget, bench), run_dir / tag / n / f"seed{s}")
        for s in seeds  # seed-major: a partial table has every setting on the first seeds
        for n in names
    ]
    log.info(
        "paper table: %d runs (%s x seeds %s), %d at a time on %s",
        len(runs),
        ",".join(names),
        seeds,
        workers,
        "the GPU" if use_gpu else "CPU",
    )
    results = run_all(run_dir, runs, workers, use_gpu)
    chance = chance_baselines(run_dir, bench, runs[0][2])
    command = "python -m jade.app.paper_table " + " ".join(argv if argv is not None else sys.argv[1:])
    doc = table_json(results, names, seeds, DIFFERENCES, chance, SETTINGS)
    doc["meta"] = {
        "command": command,
        "minutes": (time.time() - t0) / 60,
        "budget": kind,
        "device": "cuda" if use_gpu else f"cpu, {workers} runs at once, 1 thread each",
        "benchmark_overlap": overlap,
        "config": {n: run_config(n, 0, budget, bench).to_dict() for n in names},
        **provenance(),
    }
    out = Path(args.out) if args.out else run_dir / tag
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    md = render(doc)
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


def provenance() -> dict:
    """The commit the table was made at (and whether the tree had changes), the load of the machine."""
    import subprocess

    def git(*a: str) -> str:
        r = subprocess.run(["git", *a], capture_output=True, text=True, cwd=Path(__file__).resolve().parent)
        return r.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
    }


if __name__ == "__main__":
    sys.exit(main())
