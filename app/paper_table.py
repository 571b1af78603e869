"""The JADE ablation in miniature: pretrain on a sample-world run with one budget under several data and
task-mixing settings, several seeds each, and write the downstream metrics as a markdown table.

    python -m jade.app.paper_table runs/sample [--quick] [--seeds 0,1,2]

Settings: (a) alt-text only; (b) + the generated, filtered QA and dense captions; (c) + the generated QA
pairs without filtering (the rejected pairs added back); (d) setting (b) under each other task-mixing
strategy. Every number in the table comes from the runs under ``DIR/paper_table/``; nothing is a constant.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

from jade.app.pretrain import run_pretrain
from jade.models.pretrain.config import PretrainConfig
from jade.pipeline.executor import LocalExecutor, RayExecutor

log = logging.getLogger("jade")

SETTINGS = [  # (row label, data variant, mixing)
    ("(a) alt-text only, dynamic", "alttext", "dynamic"),
    ("(b) + filtered QA & dense captions, dynamic", "filtered", "dynamic"),
    ("(c) + unfiltered QA (rejected added back), dynamic", "unfiltered", "dynamic"),
    ("(d) (b) with uniform mixing", "filtered", "uniform"),
    ("(d) (b) with proportional mixing", "filtered", "proportional"),
    ("(d) (b) with round-robin mixing", "filtered", "round_robin"),
]
METRICS = [
    ("vqa_accuracy", "VQA acc"),
    ("retrieval_i2t_r1", "I→T R@1"),
    ("retrieval_t2i_r1", "T→I R@1"),
    ("retrieval_i2t_r5", "I→T R@5"),
    ("retrieval_t2i_r5", "T→I R@5"),
    ("cider", "CIDEr-D"),
]
BUDGETS = {  # the same budget for every setting; --quick for a short check
    "full": {"steps": 300, "vqa_steps": 150, "vqa_eval_questions": 300},
    "quick": {"steps": 80, "vqa_steps": 80, "vqa_eval_questions": 200},
}


def _cell(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.3f} ± {sd:.3f}"


def render(
    results: dict[str, list[dict]], budget: dict, seeds: list[int], command: str, minutes: float
) -> str:
    lines = [
        "# Pretraining ablation on the sample world (JADE's table, in miniature)",
        "",
        f"Command: `{command}` ({minutes:.1f} min). Budget per run: {budget}; seeds {seeds}; "
        "cells are mean ± standard deviation over seeds.",
        "",
        "| setting | " + " | ".join(name for _, name in METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for label, runs in results.items():
        lines.append(f"| {label} | " + " | ".join(_cell([r.get(k) for r in runs]) for k, _ in METRICS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    p = argparse.ArgumentParser(prog="paper_table", description=__doc__)
    p.add_argument("dir", help="a sample-world run directory (dataset/, rejected/, run.json)")
    p.add_argument("--quick", action="store_true", help=f"shorter budget: {BUDGETS['quick']}")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument(
        "--steps",
        type=int,
        help="pretraining steps per run instead of the budget's (the VQA fine-tune stays); the table then goes "
        "to paper_table-steps<N>.md and its runs under paper_table-steps<N>/",
    )
    p.add_argument(
        "--settings",
        default="abcd",
        help="which rows to run, by letter: a (alt-text), b (+ filtered), c (+ unfiltered), d (b's mixings)",
    )
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    args = p.parse_args(argv)
    run_dir = Path(args.dir)
    budget = dict(BUDGETS["quick" if args.quick else "full"])
    name = "paper_table"
    if args.steps is not None:  # --steps 0 is an error, not the default budget
        if args.steps < 1:
            p.error("--steps must be at least 1")
        budget["steps"], name = args.steps, f"paper_table-steps{args.steps}"
    seeds = [int(s) for s in args.seeds.split(",")]
    executor = LocalExecutor() if args.executor == "local" else RayExecutor()
    t0, results = time.time(), {}
    try:
        for i, (label, data, mixing) in enumerate(SETTINGS):
            if label[1] not in args.settings:
                continue
            results[label] = []
            for seed in seeds:
                cfg = PretrainConfig(data=data, mixing=mixing, seed=seed, **budget)
                out = run_dir / name / f"{i}_{data}_{mixing}" / f"seed{seed}"
                log.info("paper table: %s, seed %d", label, seed)
                m = run_pretrain(run_dir, cfg, executor, out=out, fresh=True)
                results[label].append({k: m.get(k) for k, _ in METRICS} | {"config": asdict(cfg)})
    finally:
        if hasattr(executor, "shutdown"):
            executor.shutdown()
    command = "python -m jade.app.paper_table " + " ".join(argv if argv is not None else sys.argv[1:])
    md = render(results, budget, seeds, command, (time.time() - t0) / 60)
    (run_dir / f"{name}.md").write_text(md)
    (run_dir / f"{name}.json").write_text(json.dumps(results, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
