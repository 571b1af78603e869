"""Pretrain: the bundled multi-task pretrainer on a run's published dataset, then its downstream evaluation.

Reads ``DIR/dataset`` (through `datasets`; never the run's private intermediate files) and, for the unfiltered
ablation only, ``DIR/rejected``; trains through the executor (Ray Train's TorchTrainer, or in-process); writes
``DIR/pretrain/``: processor/, checkpoint/ (safetensors; a rerun resumes), tb/ (TensorBoard events),
metrics.json (DESIGN.md section 10) and task_shares.png. The VQA evaluation uses the run's VQA v2 files
(train for the short fine-tune, val for the held-out questions) named in ``DIR/run.json``.

A run directory on an object store (s3://...) is staged through the local cache: dataset/, rejected/ and
run.json are copied down, the pretraining runs on local folders (a rerun resumes from the store's
pretrain/checkpoint), and pretrain/ is uploaded when it ends, checkpoint/state.json last. VQA files at URLs
are copied to the local cache (`jade.remote.localize`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from jade import remote
from jade.models.pretrain.config import PretrainConfig
from jade.models.pretrain.data import load_split
from jade.models.pretrain.evaluate import evaluate
from jade.models.pretrain.loop import CKPT, PretrainJob, load_checkpoint, pretrain_loop
from jade.pipeline.resources import TrainResources
from jade.pipeline.rundir import RunDir, atomic_write_json

log = logging.getLogger("jade")
MAX_EVAL_IMAGES = 500


def vqa_files(run_dir: Path) -> dict | None:
    """The run's VQA v2 train files (run.json) and their val counterparts, when all exist (local copies of
    those at URLs)."""
    try:
        vqa = json.loads((run_dir / "run.json").read_text())["manifest"]["sources"]["vqa"]
    except (OSError, KeyError, TypeError, ValueError):
        return None
    if not vqa:
        return None
    files = {k: vqa[k] for k in ("questions", "annotations", "images")}
    files.update({f"val_{k}": v.replace("train2014", "val2014") for k, v in files.items()})
    if not all(remote.exists(p) for p in files.values()):
        return None
    return {k: remote.localize(v) for k, v in files.items()}


def plot_shares(shares: dict[str, list[float]], steps: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.stackplot(steps, *shares.values(), labels=list(shares))
    ax.set(xlabel="step", ylabel="share of the batch", ylim=(0, 1), title="task shares over time")
    ax.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_pretrain(
    run_dir: str | Path,
    cfg: PretrainConfig,
    executor,
    resources: TrainResources | None = None,
    out: str | Path | None = None,
    fresh: bool = False,
    eval_only: bool = False,
    use_gpu: bool | None = None,
) -> dict:
    run = RunDir(run_dir)
    if run.local:
        return _run_pretrain(run.root, cfg, executor, resources, out, fresh, eval_only, use_gpu)
    if out is not None and remote.is_url(str(out)):
        raise ValueError(f"--out {out}: a local folder (the default, DIR/pretrain, is on the run's store)")
    stage = run.scratch / "pretrain-stage"  # the run's files that pretraining reads, copied down
    shutil.rmtree(stage, ignore_errors=True)
    for rel in ("dataset", "rejected"):
        if run.exists(rel):
            run.download(rel, stage / rel)
    if run.exists("run.json"):  # optional, as on a local run directory (`vqa_files`)
        (stage / "run.json").write_bytes(run.read_bytes("run.json"))
    if out is not None:
        return _run_pretrain(stage, cfg, executor, resources, out, fresh, eval_only, use_gpu)
    local = run.scratch / "pretrain"
    shutil.rmtree(local, ignore_errors=True)
    if fresh:
        run.remove_tree("pretrain")
    elif run.exists(f"pretrain/{CKPT}/state.json"):
        run.download("pretrain", local)  # resume from (or evaluate) the stored checkpoint
    try:
        return _run_pretrain(stage, cfg, executor, resources, local, False, eval_only, use_gpu)
    finally:  # what was trained so far, also when stopped: a rerun resumes from it
        if (local / CKPT / "state.json").exists():
            run.put_dir(local, "pretrain", last=f"{CKPT}/state.json")


def _run_pretrain(
    run_dir: Path,
    cfg: PretrainConfig,
    executor,
    resources: TrainResources | None,
    out: str | Path | None,
    fresh: bool,
    eval_only: bool,
    use_gpu: bool | None = None,
) -> dict:
    """Pretrain on ``run_dir``'s dataset (unless ``eval_only``), evaluate, write ``metrics.json``. ``use_gpu``:
    None uses CUDA when the machine has it."""
    import torch

    use_gpu = torch.cuda.is_available() if use_gpu is None else use_gpu
    device = "cuda" if use_gpu else "cpu"
    run_dir = Path(run_dir)
    dataset = run_dir / "dataset"
    out = Path(out) if out else run_dir / "pretrain"
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if not eval_only:
        job = PretrainJob(cfg, str(out.resolve()), str(dataset.resolve()), use_gpu=use_gpu)
        executor.train(pretrain_loop, job, resources or TrainResources(), out.resolve() / "ray")
    if not (out / CKPT / "state.json").exists():
        raise RuntimeError(f"{out}: no pretraining checkpoint to evaluate")
    train_seconds = time.time() - t0
    model, processor, state = load_checkpoint(out)
    # the model's settings from the checkpoint; the evaluation's from this call (`--eval-only` with a new budget)
    cfg = PretrainConfig.from_dict(state["config"]).with_evaluation(cfg)
    heldout = None
    if not cfg.benchmarks:  # the held-out images' alt-text are the references
        _, heldout = load_split(
            dataset, "alttext", cfg.eval_fraction, cfg.arch.image_size, cfg.streaming, cfg.max_images
        )
        heldout = type(heldout)(
            **{k: v[:MAX_EVAL_IMAGES] if isinstance(v, list) else v for k, v in vars(heldout).items()}
        )
    report = evaluate(model, processor, cfg, heldout, vqa_files(run_dir), device)
    history = state["history"]
    steps = [h["step"] for h in history]
    shares = {t: [h["shares"].get(t, 0.0) for h in history] for t in state["tasks"]}
    metrics = {
        "vqa_accuracy": report.get("vqa_accuracy"),
        "retrieval_i2t_r1": report["retrieval_i2t_r1"],
        "retrieval_t2i_r1": report["retrieval_t2i_r1"],
        "cider": report["cider"],
        "region_accuracy": report.get("region_accuracy"),
        "steps": state["step"],
        "pretrain_seconds": None if eval_only else train_seconds,
        "task_shares": shares,  # per task: its share of each step's batch, aligned with task_shares_step
        "task_shares_step": steps,
        "task_losses": {t: [h["losses"].get(t) for h in history] for t in state["tasks"]},
        **{k: v for k, v in report.items() if k not in ("vqa_accuracy", "cider", "region_accuracy")},
        "config": cfg.to_dict(),
    }
    atomic_write_json(out / "metrics.json", metrics, indent=1)
    plot_shares(shares, steps, out / "task_shares.png")
    return metrics
