"""Ingest benchmark: shard checking against a plain Pillow loop, and memory while streaming a real-size file.

1. Throughput, images per CPU-second (= per core): the ingest stage's own shard check (`stages.ingest.check_shard`) (read the tar and
   its img2dataset sidecar, decode fully, check the mode and the pixel limit, write samples and failures)
   against a plain Pillow loop (`tarfile` + `Image.open(...).convert("RGB")`) over the same img2dataset
   webdataset shards, in this one process, alternating and best of `--repeats` (the machine may be shared).
   The images are photo-like JPEGs of img2dataset's default output size (256 px) with a few palette PNGs
   and CMYK JPEGs, as the web has them.
2. Memory: a Visual Genome `region_descriptions.json` of the real size (108,077 images, ~50 regions each,
   ~700 MB; `--quick`: 2,000 images) with its `image_data.json` and a `VG_100K/` of empty image files is
   written to a temporary folder (deleted after), then read in fresh subprocesses: the reader alone
   (`formats.vg.iter_regions`) and the whole ingest job (`stages.examples.AnnotationJob`: caption examples
   written to Parquet). Each reports its peak RSS, to compare with the file size.

    python -m bench.ingest --out runs/bench [--quick]       # writes runs/bench/ingest.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from jade.formats import vg
from jade.formats.shards import list_shards
from jade.stages.examples import AnnotationJob
from jade.stages.ingest import IngestSettings, check_shard

VG_IMAGES, VG_REGIONS_PER_IMAGE = 108_077, 50  # Visual Genome 1.2: 5.4 M regions
PHRASES = [
    "the clock is green in colour",
    "shade is along the street ",
    "man is wearing sneakers",
    "cars headlights are off",
    "bikes are parked at the far edge",
    "a white sign on the pole",
    "the sky is clear and blue",
    "tree with green leaves",
]


# ------------------------------------------------------------------------------------------- throughput
def photo(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """Photo-like content (smooth colour fields with detail), so JPEG sizes and decode costs are realistic."""
    small = Image.frombytes("RGB", (12, 9), bytes(rng.randrange(256) for _ in range(12 * 9 * 3)))
    img = small.resize(size, Image.BICUBIC)
    noise = Image.effect_noise(size, 24).convert("RGB")
    return Image.blend(img, noise, 0.15)


def image_bytes(rng: random.Random, i: int) -> tuple[bytes, str]:
    size = (256, rng.choice([256, 320, 384])) if i % 2 else (rng.choice([256, 320, 384]), 256)
    img, buf = photo(rng, size), io.BytesIO()
    if i % 50 == 7:
        img.convert("P", palette=Image.ADAPTIVE).save(buf, "PNG")
        return buf.getvalue(), "png"
    if i % 50 == 23:
        img.convert("CMYK").save(buf, "JPEG", quality=90)
        return buf.getvalue(), "jpg"
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue(), "jpg"


def write_shards(folder: Path, shards: int, per_shard: int) -> list[Path]:
    """img2dataset-style webdataset shards: NNNNN.tar (.jpg/.png, .txt, .json) + NNNNN.parquet sidecar."""
    rng, paths = random.Random(0), []
    for s in range(shards):
        rows, members = [], []
        for i in range(per_shard):
            key = f"{s * 10000 + i:09d}"
            data, ext = image_bytes(rng, i)
            meta = {
                "url": f"https://example.com/{key}.jpg",
                "key": key,
                "status": "success",
                "caption": f"photo {i}",
            }
            rows.append({**meta, "error_message": None})
            members += [
                (f"{key}.{ext}", data),
                (f"{key}.txt", f"photo {i}".encode()),
                (f"{key}.json", json.dumps(meta).encode()),
            ]
        path = folder / f"{s:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        pq.write_table(pa.Table.from_pylist(rows), folder / f"{s:05d}.parquet")
        paths.append(path)
    return paths


def pillow_loop(paths: list[Path]) -> int:
    """The plain way: every image member of every tar, decoded to RGB with Pillow."""
    n = 0
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith((".jpg", ".png", ".webp")):
                    data = tar.extractfile(member).read()
                    Image.open(io.BytesIO(data)).convert("RGB")
                    n += 1
    return n


def checker_pass(paths: list[Path], run_root: Path) -> int:
    """The ingest stage's shard checker over the same shards (a fresh run directory each pass)."""
    shutil.rmtree(run_root, ignore_errors=True)
    n = 0
    for ref in list_shards("webdataset", [str(p) for p in paths]):
        counts = check_shard(ref, IngestSettings(min_image_size=1)).counts
        n += counts["images_in"]
        assert counts["images_failed"] == 0, counts
    return n


def timed(fn, *args) -> tuple[int, float, float]:
    """(result, CPU seconds, wall seconds)."""
    c0, w0 = time.process_time(), time.perf_counter()
    n = fn(*args)
    return n, time.process_time() - c0, time.perf_counter() - w0


def throughput(tmp: Path, quick: bool, repeats: int) -> dict:
    shards, per_shard = (1, 300) if quick else (4, 1000)
    (tmp / "shards").mkdir()
    paths = write_shards(tmp / "shards", shards, per_shard)
    best: dict[str, tuple[float, float]] = {}
    for _ in range(repeats):
        for name, fn, args in (
            ("pillow", pillow_loop, (paths,)),
            ("checker", checker_pass, (paths, tmp / "run")),
        ):
            n, cpu, wall = timed(fn, *args)
            assert n == shards * per_shard
            per_cpu, per_wall = n / cpu, n / wall
            if name not in best or per_cpu > best[name][0]:
                best[name] = (per_cpu, per_wall)
    return {
        "images": shards * per_shard,
        "shards": shards,
        "shard_mb": round(sum(p.stat().st_size for p in paths) / len(paths) / 2**20, 1),
        "checker_images_per_cpu_s": round(best["checker"][0], 1),
        "pillow_images_per_cpu_s": round(best["pillow"][0], 1),
        "checker_vs_pillow": round(best["checker"][0] / best["pillow"][0], 3),
        "checker_images_per_wall_s": round(best["checker"][1], 1),
        "pillow_images_per_wall_s": round(best["pillow"][1], 1),
        "repeats": repeats,
    }


# -------------------------------------------------------------------------------------------- memory
def write_vg(folder: Path, images: int) -> dict:
    """image_data.json, region_descriptions.json (streamed out, never held) and VG_100K/ of empty files."""
    rng = random.Random(0)
    (folder / "VG_100K").mkdir(parents=True)
    with open(folder / "image_data.json", "w") as f:
        f.write("[")
        for i in range(1, images + 1):
            url = f"https://cs.stanford.edu/people/rak248/VG_100K/{i}.jpg"
            record = {
                "width": 800,
                "url": url,
                "height": 600,
                "image_id": i,
                "coco_id": None,
                "flickr_id": None,
            }
            f.write(("" if i == 1 else ", ") + json.dumps(record))
            open(folder / "VG_100K" / f"{i}.jpg", "wb").close()
        f.write("]")
    regions = 0
    with open(folder / "region_descriptions.json", "w") as f:
        f.write("[")
        for i in range(1, images + 1):
            n = rng.randint(VG_REGIONS_PER_IMAGE // 2, VG_REGIONS_PER_IMAGE * 3 // 2)
            items = ", ".join(
                f'{{"region_id": {regions + j}, "width": {rng.randint(10, 300)}, '
                f'"height": {rng.randint(10, 300)}, "image_id": {i}, "phrase": "{rng.choice(PHRASES)}", '
                f'"y": {rng.randint(0, 290)}, "x": {rng.randint(0, 490)}}}'
                for j in range(n)
            )
            f.write(("" if i == 1 else ", ") + f'{{"regions": [{items}], "id": {i}}}')
            regions += n
        f.write("]")
    return {
        "images": images,
        "regions": regions,
        "file_mb": round((folder / "region_descriptions.json").stat().st_size / 2**20, 1),
    }


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so it covers the streaming only, not the imports before."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(mode: str, folder: str) -> None:
    """Run in a fresh process: stream the file, print its peak RSS and the RSS before reading as JSON."""
    baseline, reset, t0 = _status_mb("VmRSS"), _reset_peak(), time.perf_counter()
    if mode == "read":
        count = sum(len(regions) for _, regions in vg.iter_regions(f"{folder}/region_descriptions.json"))
    else:
        src = {
            "image_data": f"{folder}/image_data.json",
            "regions": f"{folder}/region_descriptions.json",
            "images": [f"{folder}/VG_100K"],
            "qas": None,
        }
        job = {
            "shard_id": "bench-vg",
            "kind": "vg_regions",
            "file": src["regions"],
            "src": src,
            "tasks": ["caption"],
        }
        count = AnnotationJob(f"{folder}/run")(job)["examples"]["caption"]
    # peak while streaming (VmHWM after the reset), else the whole process's peak (imports included)
    peak = _status_mb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = round(time.perf_counter() - t0, 1)
    print(
        json.dumps(
            {
                "count": count,
                "peak_rss_mb": round(peak, 1),
                "baseline_rss_mb": round(baseline, 1),
                "peak_of": "streaming" if reset else "process",
                "seconds": seconds,
            }
        )
    )


def memory(tmp: Path, quick: bool) -> dict:
    folder = tmp / "vg"
    t0 = time.perf_counter()
    out = write_vg(folder, 2_000 if quick else VG_IMAGES)
    out["write_seconds"] = round(time.perf_counter() - t0, 1)
    for mode in ("read", "ingest"):
        cmd = [sys.executable, "-m", "bench.ingest", "--child", mode, str(folder)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["peak_over_file"] = round(res["peak_rss_mb"] / out["file_mb"], 3)
        res["mb_per_s"] = round(out["file_mb"] / max(res["seconds"], 1e-3), 1)
        out[mode] = res
    assert out["read"]["count"] == out["regions"], out
    return out


def run(out: Path, quick: bool = False, repeats: int | None = None) -> dict:
    """Run both parts and write `out/ingest.json`; returns the report."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="jade-bench-ingest-") as tmp:
        tput = throughput(Path(tmp), quick, repeats or (1 if quick else 3))
        mem = memory(Path(tmp), quick)
    report = {
        "ingest_images_per_cpu_s": tput["checker_images_per_cpu_s"],
        "pillow_images_per_cpu_s": tput["pillow_images_per_cpu_s"],
        "ingest_vs_pillow": tput["checker_vs_pillow"],
        "annotation_file_mb": mem["file_mb"],
        "peak_rss_mb_read": mem["read"]["peak_rss_mb"],
        "peak_rss_mb_ingest": mem["ingest"]["peak_rss_mb"],
        "throughput": tput,
        "memory": mem,
        "quick": quick,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "date": time.strftime("%Y-%m-%d"),
    }
    (out / "ingest.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/bench", help="folder for ingest.json (default runs/bench)")
    p.add_argument("--quick", action="store_true", help="small inputs (seconds, for tests and development)")
    p.add_argument("--repeats", type=int, help="throughput passes per path, best kept (default 3; --quick 1)")
    p.add_argument("--child", nargs=2, metavar=("MODE", "FOLDER"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    report = run(Path(args.out), args.quick, args.repeats)
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, dict)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
