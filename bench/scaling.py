"""Scaling benchmark: the generate stage on Ray with a pool of 1 and of 2 actors, images/s and the ratio.

The sample world's images, the trained sample-world models (`bench.generate.find_models`) and the real
`RayExecutor.map_shards` path a run takes (Ray Data, an actor pool, one shard per call). Each pool size
runs from scratch (no completion records to skip on); the time includes starting the actors and loading
the model, as in a run; `steady_images_per_s` leaves that out (first shard start to last shard end, from the
shard records). Pool sizes alternate over 2 rounds (1 with --quick) and the best of each is kept.
Every actor gets cores / 2 torch threads in both pools, so the two pools differ only in the number of actors
(on a 2-core machine: 1 thread each; the 2-actor pool uses both cores). On a machine with GPUs the same is
repeated with `num_gpus` per actor (1 / actors: both actors share one GPU, as the manifest's fractions allow).

    python -m bench.scaling --out runs/bench [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

from bench.generate import find_models, make_run, shard_items, world_overrides
from jade.pipeline.config import StageResources, load_manifest
from jade.pipeline.executor import RayExecutor, WorkerFactory
from jade.pipeline.rundir import RunDir
from jade.stages.generate import Generate, Generator

log = logging.getLogger("jade")


def time_pool(ex: RayExecutor, root: Path, settings: dict, actors: int, num_gpus: float = 0.0) -> dict:
    run = RunDir(root)
    tag = f"scaling-{actors}-{'gpu' if num_gpus else 'cpu'}"
    shutil.rmtree(run.state / "generate", ignore_errors=True)  # fresh: nothing to skip
    res = StageResources(actors=actors, num_cpus=0.5, num_gpus=num_gpus, batch_size=16)
    threads = max(1, (os.cpu_count() or 1) // 2)  # the same actor in both pools: only their number changes
    factory = WorkerFactory(Generator, str(root), f"bench-{tag}", settings, res.batch_size, threads)
    t0 = time.perf_counter()
    results = ex.map_shards(factory, shard_items(root), res)
    secs = time.perf_counter() - t0
    if errors := [r for r in results if r.get("error")]:
        raise RuntimeError(f"bench.scaling: {errors[0]['shard']}: {errors[0]['error']}")
    images = sum(r["images"] for r in results)
    # Steady state, without starting actors and loading models: from the first shard's start to the last end.
    recs = [run.done("generate", f"bench-{tag}", r["shard"]) for r in results]
    busy = max(r["finished_at"] for r in recs) - min(r["finished_at"] - r["seconds"] for r in recs)
    log.info("scaling: %d actor(s)%s: %d images in %.1fs, %.2f images/s (%.2f without start-up)", actors,
             f", num_gpus={num_gpus}" if num_gpus else "", images, secs, images / secs, images / busy)  # fmt: skip
    return {"actors": actors, "num_gpus": num_gpus, "threads_per_actor": threads, "images": images,
            "shards": len(results), "seconds": secs, "images_per_s": images / secs, "busy_seconds": busy,
            "steady_images_per_s": images / busy}  # fmt: skip


def run(out: Path, quick: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    images = 16 if quick else 128
    root = make_run(out, "scaling", images, find_models(out, None))
    m = load_manifest("sample", world_overrides(images), {"SAMPLE_WORLD": str(RunDir(root).world)})
    settings = Generate().settings(m)
    ex = RayExecutor(num_cpus=os.cpu_count())
    try:
        report: dict = {"cpus": os.cpu_count(), "gpus": ex.gpus(), "rounds": 1 if quick else 2}
        # Alternating rounds, the best of each pool size: the machine's other load hits both alike.
        runs = [time_pool(ex, root, settings, n) for _ in range(report["rounds"]) for n in (1, 2)]
        one = max((r for r in runs if r["actors"] == 1), key=lambda r: r["images_per_s"])
        two = max((r for r in runs if r["actors"] == 2), key=lambda r: r["images_per_s"])
        report.update(one_actor=one, two_actors=two, ratio_2_over_1=two["images_per_s"] / one["images_per_s"],
                      steady_ratio_2_over_1=two["steady_images_per_s"] / one["steady_images_per_s"],
                      seconds_all_rounds={n: [r["seconds"] for r in runs if r["actors"] == n] for n in (1, 2)})  # fmt: skip
        if report["gpus"]:
            g1, g2 = time_pool(ex, root, settings, 1, 1.0), time_pool(ex, root, settings, 2, 0.5)
            report["gpu"] = {"one_actor": g1, "two_actors": g2,
                             "ratio_2_over_1": g2["images_per_s"] / g1["images_per_s"],
                             "steady_ratio_2_over_1": g2["steady_images_per_s"] / g1["steady_images_per_s"]}  # fmt: skip
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
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    print(json.dumps(run(Path(a.out), a.quick), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
