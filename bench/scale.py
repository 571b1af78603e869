"""`make bench-scale`: the whole factory on the sample world at a CC3M-like shard count and at a tenth of it,
to show that no stage's cost per image grows with the number of shards (CC3M is 332 shards, CC12M ~1,240).

Each size is one `jade run` of the sample manifest (tiny models: the subject is the framework, not the models;
10 images a shard) in a process of its own, on a private local Ray cluster, as a user runs it. Per shard
stage, from its completion record: seconds, seconds per image and per shard, at each size and their ratio;
the peak resident memory of the driver and of the largest process under it (Ray's actors, its raylet and
GCS), sampled every 0.2 s; the files the run directory holds. Then deduplication's cross-shard pass alone
(`stages.dedupe.find_duplicates`) on synthetic digests of 1 and 4 million images, for its time and memory
per image at CC3M / CC12M sizes. Writes runs/bench/scale.json; docs/bench.md reads it.

    python -m bench.scale --out runs/bench [--sizes 33,332] [--per-shard 10] [--dedupe 1000000,4000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

from jade.pipeline.rundir import read_json
from tests.tiny import TINY  # the tests' tiny models and world; the shard count and size are set after them

SHARD_STAGES = ("ingest", "dedupe", "generate", "answers", "filter", "publish")


class PeakRSS:
    """The peak resident memory of a process and, separately, of the largest process under it."""

    def __init__(self, pid: int, every: float = 0.2):
        self.proc, self.every = psutil.Process(pid), every
        self.driver = self.largest = 0
        self.largest_name = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.driver = max(self.driver, self.proc.memory_info().rss)
                children = self.proc.children(recursive=True)
            except psutil.Error:
                continue
            for c in children:
                try:
                    rss, name = c.memory_info().rss, " ".join(c.cmdline()[:1])
                except psutil.Error:
                    continue
                if rss > self.largest:
                    self.largest, self.largest_name = rss, name

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        mb = 1 << 20
        return {
            "driver_mb": round(self.driver / mb, 1),
            "largest_child_mb": round(self.largest / mb, 1),
            "largest_child": self.largest_name,
        }


def run_size(out: Path, shards: int, per_shard: int, only: tuple[str, ...] = ()) -> dict:
    """One `jade run` at ``shards`` shards (only the stages ``only`` when given); its stages' costs, peak memory and
    files."""
    root = out / (f"scale-{shards}" if not only else f"shard-{per_shard}")
    sets = [
        *TINY,
        f"sample_world.cc3m_shards={shards}",
        f"sample_world.cc3m_images={shards * per_shard}",
        'sources.images.urls=["${SAMPLE_WORLD}/cc3m/*.tar"]',
    ]
    cmd = [sys.executable, "-m", "jade.app.cli", "run", "sample", "--out", str(root)]
    if only:
        cmd += ["--stages", ",".join(only)]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    t0 = time.time()
    with open(root.with_suffix(".log"), "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        rss = PeakRSS(proc.pid)
        code = proc.wait()
        memory = rss.stop()
    if code:
        raise RuntimeError(f"bench.scale: jade run at {shards} shards exited {code}: see {log.name}")
    stages = {}
    for st in only or SHARD_STAGES:
        rec = read_json(root / "_state" / st / "_stage.json") or {}
        shard_recs = [read_json(root / "_state" / st / f"{s}.json") or {} for s in rec["shard_fps"]]
        images = sum(r.get("images", 0) for r in shard_recs)
        cpu = sum(r.get("cpu_seconds", 0.0) for r in shard_recs)
        work = sum(r.get("work_seconds", 0.0) for r in shard_recs)
        stages[st] = {
            "seconds": rec["seconds"],  # the stage's wall time on the driver, actor start-up included
            "shards": rec["shards"],
            "images": images,
            "seconds_per_image": rec["seconds"] / max(images, 1),
            "seconds_per_shard": rec["seconds"] / max(rec["shards"], 1),
            # the shards' own work (in the actors), wall and CPU: CPU seconds are what other load on the
            # machine does not inflate
            "work_seconds_per_image": work / max(images, 1),
            "cpu_seconds_per_image": cpu / max(images, 1),
            "cpu_seconds_per_shard": cpu / max(rec["shards"], 1),
        }
    files = Counter(p.relative_to(root).parts[0] for p in root.rglob("*") if p.is_file())
    stats = read_json(root / "stats.json") or {}
    return {
        "shards": shards,
        "images_in": stats.get("images_in"),
        "images_ok": stats.get("images_ok"),
        "wall_seconds": round(time.time() - t0, 1),
        "stages": stages,
        "peak_rss": memory,
        "files": dict(sorted(files.items())),
        "files_total": sum(files.values()),
    }


def dedupe_pass(n: int) -> dict:
    """find_duplicates over synthetic digests of ``n`` images in 1,000-image shards (1% repeated keys, 2%
    repeated images), in a fresh process: seconds and peak RSS."""
    code = f"""
import json, resource, time
import numpy as np
from jade.stages.dedupe import DedupeSettings, find_duplicates
n, per = {n}, 1000
rng = np.random.default_rng(0)
d = rng.integers(0, 2**63, size=(n, 2), dtype=np.uint64)
for col, share in ((0, 0.01), (1, 0.02)):  # repeated keys, repeated images: copies of earlier rows
    rows = rng.choice(np.arange(1, n), size=int(n * share), replace=False)
    d[rows, col] = d[rng.integers(0, rows), col]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
shards = [d[i:i + per] for i in range(0, n, per)]
read = lambda i, column: [str(v) for v in shards[i][:, 0 if column == "key" else 1]]  # values = hashes
t0 = time.perf_counter()
out = find_duplicates([str(i) for i in range(len(shards))], shards, DedupeSettings(True), read)
print(json.dumps({{"seconds": time.perf_counter() - t0, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_before_mb": base / 1024, "dropped": sum(map(len, out.values()))}}))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    r = json.loads(res.stdout.strip().splitlines()[-1])
    return {"images": n, **r, "seconds_per_million": r["seconds"] / n * 1e6}


def run(
    out: Path,
    sizes: tuple[int, ...] = (33, 332),
    per_shard: int = 10,
    dedupe=(1_000_000, 4_000_000),
    big_shard: int = 10_000,
):
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"per_shard": per_shard, "sizes": {}}
    for s in sizes:
        report["sizes"][str(s)] = run_size(out, s, per_shard)
        print(f"bench.scale: {s} shards done", flush=True)
    lo, hi = (report["sizes"][str(s)] for s in (min(sizes), max(sizes)))
    report["ratio_per_image"] = {
        st: hi["stages"][st]["seconds_per_image"] / lo["stages"][st]["seconds_per_image"]
        for st in SHARD_STAGES
    }
    for key, field in (
        ("ratio_work_per_image", "work_seconds_per_image"),
        ("ratio_cpu_per_image", "cpu_seconds_per_image"),
    ):
        report[key] = {
            st: hi["stages"][st][field] / lo["stages"][st][field] if lo["stages"][st][field] else None
            for st in SHARD_STAGES
        }
    report["ratio_peak_rss"] = {
        k: hi["peak_rss"][k] / lo["peak_rss"][k] for k in ("driver_mb", "largest_child_mb")
    }
    report["dedupe_pass"] = [dedupe_pass(n) for n in dedupe]
    if big_shard:  # one shard of CC3M's size through ingest and dedupe: an actor's memory at 10,000 images
        report["one_shard"] = run_size(out, 1, big_shard, ("ingest", "dedupe"))
    (out / "scale.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--sizes", default="33,332", help="shard counts, comma-separated")
    p.add_argument("--per-shard", type=int, default=10, help="images per shard")
    p.add_argument("--dedupe", default="1000000,4000000", help="synthetic image counts for the dedupe pass")
    p.add_argument(
        "--big-shard", type=int, default=10_000, help="images of the one-shard ingest+dedupe run (0: none)"
    )
    a = p.parse_args(argv)
    sizes = tuple(int(x) for x in a.sizes.split(","))
    dedupe = tuple(int(x) for x in a.dedupe.split(",") if x)
    report = run(Path(a.out), sizes, a.per_shard, dedupe, a.big_shard)
    print(
        json.dumps(
            {
                k: report[k]
                for k in ("ratio_per_image", "ratio_work_per_image", "ratio_cpu_per_image", "ratio_peak_rss")
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
