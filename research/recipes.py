"""Training-recipe sweep for the sample world's tiny models: many recipes trained side by side (one process
each, on a GPU machine), each scored at several steps on the same held-out probe questions as `jade eval`'s
``model_accuracy`` (per type and template). Research, not part of the product (which never imports it) nor of
`make bench`: it reads the world's truth. It answers "what would it take" questions that the 2-core sample
budget cannot: how many examples the filter needs before it answers colour and shape questions, and how much
that depends on the seed. From the repository root:

    python -m research.recipes prep ROOT                    # worlds w0 (the sample manifest's) and w1 (4x)
    python -m research.recipes sweep ROOT --grid seeds --out runs/recipes.json [--deadline 470]
    python -m research.recipes table runs/recipes.json [--summary > research/results/NAME.md]

A recipe is a dict: ``steps``, ``bs`` (32), ``lr`` (1e-3), ``warmup`` (50), ``wd`` (0), ``sched``
(``cosine`` as the factory's training loop, ``linear`` or ``const``), ``seed`` (0), ``role`` (``filter`` or
``generator``), ``world`` (``w0``), ``arch`` (overrides of the sample manifest's architecture,
`jade.models.specs.Architecture`), ``attention`` (the rule of `jade.models.attention`, ``prefix``), ``tasks``
(only these training tasks; all by default) and ``evals`` (extra steps at which to score).
`research/recipes.json` holds the grids measured for the README (2026-11-23, one H200). ``sweep`` writes
every recipe's full curve (a raw file: keep it out of the repository); ``table`` shows it a row per recipe and
scored step, ``table --summary`` a row per recipe (its last scored step and its curve, a few KB):
`research/results/recipes-h200-2026-11-23.md` is that summary of the 2026-11-23 sweep.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jade.models.specs import Architecture

GRIDS = Path(__file__).with_name("recipes.json")
REPO = GRIDS.parent.parent  # `python -m research.recipes` runs from here
WORLDS = {"w0": (2000, 1000, 3000), "w1": (6000, 3000, 12000)}  # VG, GQA, VQA train images


def prep(root: Path, name: str, vg: int, gqa: int, vqa: int, val: int = 100) -> None:
    """A world, each role's training examples (the factory's own examples stage, `jade run --stages
    examples`) and tokenizer under root/name."""
    from jade.app.runner import run_manifest
    from jade.models import factory
    from jade.models.tasks import strip_locs
    from jade.pipeline.executor import LocalExecutor
    from jade.stages.examples import Examples

    wdir = root / name
    sizes = {
        "vg_images": vg,
        "gqa_images": gqa,
        "vqa_train_images": vqa,
        "vqa_val_images": val,
        "cc3m_images": 4,
        "cc3m_shards": 2,  # the sample manifest names shards 00000 and 00001
    }
    sets = ["seed=0", *(f"sample_world.{k}={v}" for k, v in sizes.items())]
    run_manifest("sample", str(wdir), sets, ["examples"], executor=LocalExecutor())
    for role in ("generator", "filter"):
        t = pq.read_table(wdir / Examples.output(role).path)
        pq.write_table(t, wdir / f"{role}.parquet")
        texts = t.column("prefix").to_pylist() + t.column("suffix").to_pylist()
        factory.build_processor(strip_locs(texts), Architecture()).save_pretrained(wdir / f"proc_{role}")
        print(f"{name}/{role}: {t.num_rows} examples", flush=True)


def _lr(sched: str, steps: int, warmup: int, base: float):
    """The recipe's learning-rate schedule: the factory's (`cosine`), or `linear` / `const` after warm-up."""
    from jade.models.train import lr_at

    def at(step: int) -> float:
        if sched == "cosine":
            return lr_at(step, steps, warmup, base)
        ramp = min(1.0, (step + 1) / warmup)
        return base * (ramp if sched == "const" else min(ramp, 1 - step / steps))

    return at


def train(root: Path, name: str, spec: dict, out: Path) -> dict:
    """One recipe through the factory's own fine-tuning loop (`models.train.train_loop`), scored at each
    ``evals`` step on the held-out probe questions."""
    import tempfile

    import torch

    from jade.models import factory
    from jade.models.attention import check
    from jade.models.specs import Training
    from jade.models.train import TrainJob, train_loop
    from jade.reports.evaluate import accuracy_summary, answer_verdicts, probe_items

    device = "cuda" if torch.cuda.is_available() else "cpu"
    wdir, role, seed = root / spec.get("world", "w0"), spec.get("role", "filter"), spec.get("seed", 0)
    work = Path(tempfile.mkdtemp(prefix=f"recipe-{name}-"))
    processor = factory.load_processor(wdir / f"proc_{role}")
    arch = replace(Architecture(), **spec.get("arch", {}))
    attention = check(spec.get("attention", "prefix"), f"{name}: attention")
    if arch.image_size != Architecture.image_size:
        n = (arch.image_size // arch.patch_size) ** 2
        processor.image_processor.size = {"height": arch.image_size, "width": arch.image_size}
        processor.image_processor.image_seq_length = processor.image_seq_length = n
    processor.save_pretrained(work / "processor")
    t = pq.read_table(wdir / f"{role}.parquet")
    if spec.get("tasks"):
        t = t.filter(pc.is_in(t.column("task"), pa.array(spec["tasks"])))
    pq.write_table(t, work / "examples.parquet")
    steps, bs, lr, warmup = spec["steps"], spec.get("bs", 32), spec.get("lr", 1e-3), spec.get("warmup", 50)
    job = TrainJob(
        examples=str(work / "examples.parquet"),
        out_dir=str(work / "model"),
        arch=arch,
        train=Training(
            steps=steps, batch_size=bs, lr=lr, weight_decay=spec.get("wd", 0.0), warmup_steps=warmup
        ),
        seed=seed,
        attention=attention,
        processor_dir=str(work / "processor"),
        threads=1,
        use_gpu=device == "cuda",
    )
    items = probe_items(root / "w0" / "world")  # every recipe is scored on the same questions
    evals = sorted(set(spec.get("evals", [])) | {steps})
    res = {"name": name, "spec": spec, "examples": t.num_rows, "device": device, "evals": {}}
    t0 = time.time()

    def score(step: int, model, loss: float) -> None:
        res["params"] = sum(p.numel() for p in model.parameters())
        if step not in evals:
            return
        model.eval()
        acc = accuracy_summary(answer_verdicts(model, processor, items, attention, batch=400, device=device))
        model.train()
        res["evals"][str(step)] = {**acc, "loss": round(loss, 4), "seconds": round(time.time() - t0, 1)}
        out.write_text(json.dumps(res, indent=1))  # at every score: a stopped recipe keeps its curve
        print(f"{name} step {step}: all {acc['all']:.3f} loss {loss:.3f}", flush=True)

    train_loop(job, on_step=score, lr_schedule=_lr(spec.get("sched", "cosine"), steps, warmup, lr))
    return res


def sweep(root: Path, specs: dict[str, dict], deadline: float, parallel: int) -> dict:
    """Every recipe in its own process (``parallel`` at a time); those still running at ``deadline`` seconds
    are stopped and keep the scores they reached."""
    root = root.resolve()  # the recipes run from the repository root
    (root / "results").mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    pending, running, t0 = list(specs.items()), {}, time.time()
    while (pending or running) and time.time() - t0 < deadline:
        while pending and len(running) < parallel:
            name, spec = pending.pop(0)
            log = open(root / "results" / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
            cmd = [sys.executable, "-m", "research.recipes", "_train", str(root), name, json.dumps(spec)]
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
            running[name] = (proc, log)
        for name, (p, log) in list(running.items()):
            if p.poll() is not None:
                log.close()
                del running[name]
                if p.returncode:
                    print(
                        f"{name} failed:\n" + (root / "results" / f"{name}.log").read_text()[-1500:],
                        flush=True,
                    )
        time.sleep(2)
    for name, (p, log) in running.items():
        p.kill()
        log.close()
        print(f"{name}: stopped at the deadline", flush=True)
    return {
        n: json.loads((root / "results" / f"{n}.json").read_text())
        for n in specs
        if (root / "results" / f"{n}.json").exists()
    }


COLUMNS = ["all", "yes/no", "number", "other"]  # the table's: overall and by question type
TEMPLATES = ["query_color", "query_shape", "query_position", "verify_color", "count_all", "relation"]


def _by_step(r: dict) -> list[tuple[str, dict]]:
    return sorted(r["evals"].items(), key=lambda kv: int(kv[0]))


def _settings(spec: dict) -> str:
    """A recipe's settings other than its steps, scoring steps and role (defaults left out)."""
    flat = {k: v for k, v in spec.items() if k not in ("steps", "evals", "role", "arch")}
    flat.update(spec.get("arch", {}))
    return (
        ", ".join(f"{k} {','.join(v) if isinstance(v, list) else v}" for k, v in flat.items()) or "defaults"
    )


def summary(results: dict) -> str:
    """The small form of a sweep's results, in Markdown: a row per recipe with its last scored step (accuracy
    overall and on `TEMPLATES`, loss) and its curve (accuracy at every scored step, by examples seen)."""
    devices = defaultdict(list)
    for name, r in results.items():
        devices[r.get("device", "?")].append(name)  # one line per device, not per recipe
    cols = ["recipe", "grid", "role", "settings", "params", "steps", "examples seen", "all", *TEMPLATES]
    lines = [
        f"Recipe sweep, {len(results)} recipes (`python -m research.recipes table RESULTS --summary`). "
        "Accuracy on the held-out probe questions at the last scored step; the curve gives the accuracy at "
        "every scored step, by examples seen (k = 1000). Settings not shown are the defaults "
        "(research/recipes.py).",
        "",
        *(f"- {device}: {len(names)} recipe{'s' * (len(names) > 1)}" for device, names in devices.items()),
        "",
        "| " + " | ".join([*cols, "loss", "curve"]) + " |",
        "|---" * (len(cols) + 2) + "|",
    ]
    for name, r in results.items():
        spec, scored = r["spec"], _by_step(r)
        if not scored:
            continue
        bs, (last, e) = spec.get("bs", 32), scored[-1]
        steps = last if int(last) == spec["steps"] else f"{last} of {spec['steps']}"
        vals = [e["all"], *(e["by_template"].get(t) for t in TEMPLATES)]
        cells = " | ".join("" if v is None else f"{v:.2f}" for v in vals)
        curve = ", ".join(f"{int(s) * bs // 1000}k {x['all']:.2f}" for s, x in scored)
        lines.append(
            f"| {name} | {r.get('grid', '')} | {spec.get('role', 'filter')} | {_settings(spec)} | "
            f"{r['params'] / 1e6:.2f} M | {steps} | {int(last) * bs // 1000}k | {cells} | "
            f"{e['loss']:.3f} | {curve} |"
        )
    return "\n".join(lines) + "\n"


def table(results: dict) -> str:
    """A Markdown table, a row per recipe and scored step."""
    lines = [
        "| recipe | step | examples seen | " + " | ".join(COLUMNS + TEMPLATES) + " | loss |",
        "|---" * (len(COLUMNS) + len(TEMPLATES) + 4) + "|",
    ]
    for name, r in results.items():
        bs = r["spec"].get("bs", 32)
        for step, e in _by_step(r):
            vals = (
                [e["all"]]
                + [e["by_type"].get(c) for c in COLUMNS[1:]]
                + [e["by_template"].get(t) for t in TEMPLATES]
            )
            cells = " | ".join("" if v is None else f"{v:.2f}" for v in vals)
            lines.append(f"| {name} | {step} | {int(step) * bs // 1000}k | {cells} | {e['loss']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_train":  # one recipe, in a process of its own (started by sweep)
        root = Path(argv[1])
        train(root, argv[2], json.loads(argv[3]), root / "results" / f"{argv[2]}.json")
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prep")
    a.add_argument("root", type=Path)
    a.add_argument("--worlds", nargs="+", default=sorted(WORLDS), choices=sorted(WORLDS))
    a = sub.add_parser("sweep")
    a.add_argument("root", type=Path)
    a.add_argument("--grid", required=True, help=f"a grid of {GRIDS.name} or a JSON file of recipes")
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--deadline", type=float, default=470.0, help="seconds; running recipes stop then")
    a.add_argument("--parallel", type=int, default=14, help="recipes at a time")
    a = sub.add_parser("table")
    a.add_argument("results", type=Path, help="a sweep's results (sweep --out)")
    a.add_argument("--summary", action="store_true", help="a row per recipe (the form kept in results/)")
    args = p.parse_args(argv)
    if args.cmd == "prep":
        for w in args.worlds:
            prep(args.root, w, *WORLDS[w])
    elif args.cmd == "sweep":
        grids = json.loads(GRIDS.read_text())
        specs = grids[args.grid] if args.grid in grids else json.loads(Path(args.grid).read_text())
        results = sweep(args.root, specs, args.deadline, args.parallel)
        for r in results.values():
            r["grid"] = args.grid if args.grid in grids else Path(args.grid).name
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
        print(table(results))
    else:
        results = json.loads(args.results.read_text())
        print(summary(results) if args.summary else table(results) + "\n", end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
