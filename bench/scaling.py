"""Scaling benchmark: the generate stage on Ray with a pool of 1 and of 2 actors, images/s and the ratio.

The sample world's images, the benchmark's models (`bench.generate`: trained ones with ``--models``, else
random weights under the ``image`` rule) and the real path a run takes: `RayExecutor.map_shards` over the
generate stage's `ShardTask` (Ray Data, an actor pool, one shard per call, tables and records written). Each pool size
runs from scratch (no completion records to skip on); the time includes starting the actors and loading
the model, as in a run; `steady_images_per_s` leaves that out (first shard start to last shard end, from the
shard records). Pool sizes alternate over 2 rounds (1 with --quick) and the best of each is kept.
Every actor gets cores / 2 torch threads in both pools, so the two pools differ only in the number of actors
(on a 2-core machine: 1 thread each; the 2-actor pool uses both cores). On a machine with GPUs the same is
repeated with `num_gpus` per actor (1 / actors: both actors share one GPU, as the manifest's fractions allow).

    python -m bench.scaling --out runs/bench [--quick] [--models DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench.generate import (
    HEADLINE,
    bench_manifest,
    given_models,
    make_base,
    random_models,
    rule_run,
    shards_of,
)
from jade.app.runner import build_stages
from jade.pipeline.executor import RayExecutor
from jade.pipeline.resources import StageResources
from jade.pipeline.rundir import RunDir
from jade.pipeline.shardmap import ShardTask
from jade.pipeline.stage import Runtime
from jade.sampleworld import WORLD_FOLDER
from jade.stages.generate import Generate

log = logging.getLogger("jade")


def time_pool(ex: RayExecutor, root: Path, stage: Generate, actors: int, num_gpus: float = 0.0) -> dict:
    run = RunDir(root)
    tag = f"scaling-{actors}-{'gpu' if num_gpus else 'cpu'}"
    shutil.rmtree(run.state / stage.name, ignore_errors=True)  # fresh: nothing to skip
    res = StageResources(actors=actors, num_cpus=0.5, num_gpus=num_gpus, batch_size=16)
    threads = max(1, (os.cpu_count() or 1) // 2)  # the same actor in both pools: only their number changes
    shards = shards_of(root)
    runtime = Runtime(
        batch_size=res.batch_size, threads=threads, shard_order=tuple(s.shard_id for s in shards)
    )
    items = [{"stage": stage.name, "shard_id": s.shard_id, "shard": asdict(s), "fp": tag} for s in shards]
    t0 = time.perf_counter()
    results = ex.map_shards(ShardTask(stage, str(root), runtime), items, res, name=stage.name)
    secs = time.perf_counter() - t0
    if errors := [r for r in results if r.get("error")]:
        raise RuntimeError(f"bench.scaling: {errors[0]['shard']}: {errors[0]['error']}")
    images = sum(r["images"] for r in results)
    # Steady state, without starting actors and loading models: from the first shard's start to the last end.
    recs = [run.done(stage.name, tag, r["shard"]) for r in results]
    busy = max(r["finished_at"] for r in recs) - min(
        r["finished_at"] - s["seconds"] for r, s in zip(recs, results, strict=True)
    )
    log.info(
        "scaling: %d actor(s)%s: %d images in %.1fs, %.2f images/s (%.2f without start-up)",
        actors,
        f", num_gpus={num_gpus}" if num_gpus else "",
        images,
        secs,
        images / secs,
        images / busy,
    )
    return {
        "actors": actors,
        "num_gpus": num_gpus,
        "threads_per_actor": threads,
        "images": images,
        "shards": len(results),
        "seconds": secs,
        "images_per_s": images / secs,
        "busy_seconds": busy,
        "steady_images_per_s": images / busy,
    }


def run(out: Path, quick: bool = False, models: str | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    images = 16 if quick else 128
    base = make_base(out, "scaling-base", images)
    dirs = given_models(out, Path(models)) if models else random_models(out, base / WORLD_FOLDER)
    root = rule_run(base, out / "scaling", dirs[HEADLINE])
    stage = next(st for st in build_stages(bench_manifest(root)) if isinstance(st, Generate))
    ex = RayExecutor(num_cpus=os.cpu_count())
    try:
        report: dict = {
            "cpus": os.cpu_count(),
            "gpus": ex.gpus(),
            "rounds": 1 if quick else 2,
            "rule": HEADLINE,
        }
        # Alternating rounds, the best of each pool size: the machine's other load hits both alike.
        runs = [time_pool(ex, root, stage, n) for _ in range(report["rounds"]) for n in (1, 2)]
        one = max((r for r in runs if r["actors"] == 1), key=lambda r: r["images_per_s"])
        two = max((r for r in runs if r["actors"] == 2), key=lambda r: r["images_per_s"])
        report.update(
            one_actor=one,
            two_actors=two,
            ratio_2_over_1=two["images_per_s"] / one["images_per_s"],
            steady_ratio_2_over_1=two["steady_images_per_s"] / one["steady_images_per_s"],
            seconds_all_rounds={n: [r["seconds"] for r in runs if r["actors"] == n] for n in (1, 2)},
        )
        if report["gpus"]:
            g1, g2 = time_pool(ex, root, stage, 1, 1.0), time_pool(ex, root, stage, 2, 0.5)
            report["gpu"] = {
                "one_actor": g1,
                "two_actors": g2,
                "ratio_2_over_1": g2["images_per_s"] / g1["images_per_s"],
                "steady_ratio_2_over_1": g2["steady_images_per_s"] / g1["steady_images_per_s"],
            }
    finally:
        ex.shutdown()
    (out / "scaling.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench")
    p.add_argument(
        "--quick", action="store_true", help="16 images (a smoke run, not figures to quote); else 128"
    )
    p.add_argument("--models", help="directory with trained generator/ and filter/ checkpoints")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    print(json.dumps(run(Path(a.out), a.quick, a.models), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
