"""`jade export` on a published run at 1x and Nx its size: seconds and peak memory of each format, each export in
a fresh process, so that "memory flat in the dataset's size" is a measured ratio, not a claim.

    python -m bench.export runs/sample [--scale 4] [--out runs/bench/export] [--shard-size 1000]

The Nx dataset is the run's data files repeated N times, each copy with its keys and URLs suffixed
(``#copy``), so every image is a new one (and a new JADE id); its stats.json is the run's counts times N.
Writes ``export.json`` under --out: per format and scale, ``seconds``, ``peak_rss_mb`` and the export's counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

FORMATS = ("jade", "llava", "wds")


def scaled_copy(run: Path, dest: Path, n: int) -> Path:
    """``dest``: a published dataset of ``run``'s data files, ``n`` times, keys and URLs made distinct."""
    if dest.exists():
        shutil.rmtree(dest)
    data = dest / "dataset" / "data"
    data.mkdir(parents=True)
    for f in sorted((run / "dataset" / "data").glob("train-*.parquet")):
        pf = pq.ParquetFile(f)
        for copy in range(n):
            name = f.name.replace("train-", f"train-c{copy}-", 1)
            with pq.ParquetWriter(data / name, pf.schema_arrow) as w:
                for rg in range(pf.metadata.num_row_groups):
                    t = pf.read_row_group(rg)
                    for col in ("key", "url"):
                        i = t.schema.get_field_index(col)
                        t = t.set_column(i, col, pc.binary_join_element_wise(t[col], f"#{copy}", ""))
                    w.write_table(t)
    stats = json.loads((run / "stats.json").read_text())
    keys = ("images_ok", "qa_kept", "regions_kept")
    (dest / "stats.json").write_text(json.dumps({k: stats[k] * n for k in keys}))
    return dest


def measure(run: Path, fmt: str, out: Path, shard_size: int) -> dict:
    """One export in a fresh process: wall seconds, its peak RSS (MB) and its counts."""
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "jade.app.cli", "export", str(run), "--format", fmt, "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [*cmd, "--shard-size", str(shard_size)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    stdout = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if status != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({status})")
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        **json.loads(stdout),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--out", default="runs/bench/export")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--formats", default=",".join(FORMATS))
    a = p.parse_args(argv)
    out, run = Path(a.out), Path(a.run)
    big = scaled_copy(run, out / f"x{a.scale}", a.scale)
    report: dict = {"command": "python -m bench.export " + " ".join(argv or sys.argv[1:])}
    for fmt in a.formats.split(","):
        one = measure(run, fmt, out / f"{fmt}-x1", a.shard_size)
        many = measure(big, fmt, out / f"{fmt}-x{a.scale}", a.shard_size)
        report[fmt] = {
            "x1": one,
            f"x{a.scale}": many,
            "memory_ratio": round(many["peak_rss_mb"] / one["peak_rss_mb"], 3),
            "time_ratio": round(many["seconds"] / one["seconds"], 3),
        }
        print(fmt, json.dumps(report[fmt]), flush=True)
    (out / "export.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
