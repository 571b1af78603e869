"""`jade export DIR --format jade|llava|wds --out PATH`: a run's published dataset in the layouts VLM trainers
read. It reads only ``DIR/dataset`` and ``DIR/stats.json``, streams the rows shard by shard (memory flat in the
dataset's size), commits each shard before its completion record (a re-run skips what is done), and writes a
card (``README.md`` + ``export.json``) whose counts must add up to stats.json's, or the export fails. A dataset
whose pairs carry the region they were asked about (`generate.condition: region`) is exported with it (each
layout's module says how) and its card says so."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from jade.atomic import atomic_write_bytes, atomic_write_json
from jade.formats import export_jade, export_llava, export_wds
from jade.formats.export_common import (
    ExportError,
    check_target,
    data_files,
    dataset_fingerprint,
    plan,
    read_stats,
    region_conditioned,
    run_shards,
    total,
)

FORMATS = ("jade", "llava", "wds")
VERSION = 1  # of the export layouts: a change makes old records stale
SHARD_SIZE = 1000


def _writer(fmt: str, out: Path):
    return {"jade": export_jade.JadeWriter, "llava": export_llava.LlavaWriter, "wds": export_wds.WdsWriter}[
        fmt
    ](out)


def summarize(fmt: str, records: list[dict]) -> dict:
    """The export's counts, summed over its shards' records."""
    counts = {k: total(records, k) for k in ("images", "qa", "regions")}
    if fmt == "jade":
        lost = [c for r in records for c in r["counts"]["collisions"]]
        counts["collisions"] = {
            "images": len(lost),
            "qa": sum(c["qa"] for c in lost),
            "regions": sum(c["regions"] for c in lost),
            "list": lost,
        }
    elif fmt == "llava":
        counts["images_without_turns"] = total(records, "no_turns")
    else:
        counts["converted_to_jpeg"] = total(records, "converted_to_jpeg")
        counts["bytes"] = total(records, "bytes")
    return counts


def check_counts(fmt: str, counts: dict, stats: dict) -> None:
    """Every published image, kept pair and kept region is in the export once, or accounted for."""
    images, qa, regions = counts["images"], counts["qa"], counts["regions"]
    if fmt == "jade":
        c = counts["collisions"]
        images, qa, regions = images + c["images"], qa + c["qa"], regions + c["regions"]
    elif fmt == "llava":
        images += counts["images_without_turns"]
    got = {"images_ok": images, "qa_kept": qa, "regions_kept": regions}
    want = {k: stats.get(k) for k in got}
    if got != want:
        raise ExportError(
            f"the export counts {got}, but stats.json says {want}: dataset/ and stats.json disagree"
        )


def card(
    fmt: str, run_dir: Path, settings: dict, counts: dict, shards: int, seconds: float, region: bool = False
) -> str:
    """The export's README; ``region``: the dataset's pairs were asked per region (`condition: region`)."""
    c = counts
    lines = [
        f"# `jade export --format {fmt}` of `{run_dir}`",
        "",
        f"Dataset fingerprint `{settings['dataset']}`; {shards} shards of up to {settings['shard_size']} images; "
        f"{seconds:.1f} s for the shards written by the last run.",
        "",
        "| images | kept QA pairs | dense captions |",
        "|---|---|---|",
        f"| {c['images']} | {c['qa']} | {c['regions']} |",
        "",
    ]
    if fmt == "jade":
        lost = c["collisions"]
        lines += [
            export_jade.card(region),
            f"Images whose id collides with an earlier image's (not written): {lost['images']}, with "
            f"{lost['qa']} pairs and {lost['regions']} regions"
            + (
                ": " + ", ".join(f"`{x['key']}` ({x['img_id']})" for x in lost["list"][:20])
                if lost["list"]
                else ""
            )
            + (" ... (all of them in export.json)" if len(lost["list"]) > 20 else "")
            + ".",
        ]
    elif fmt == "llava":
        lines += [export_llava.CARD, *([export_llava.REGION_CARD] if region else [])]
        lines += [f"Images without a conversation: {c['images_without_turns']}."]
    else:
        last = f"{shards - 1:06d}"
        lines += [
            export_wds.CARD.format(size=settings["shard_size"], last=last),
            *([export_wds.REGION_CARD] if region else []),
            f"Converted to JPEG: {c['converted_to_jpeg']}; {c['bytes']} bytes in all.",
        ]
    lines += ["", "Every count above, with what is accounted for apart, equals stats.json's (checked)."]
    return "\n".join(lines) + "\n"


def export(run_dir: str | Path, fmt: str, out: str | Path, shard_size: int = SHARD_SIZE, log=None) -> dict:
    """Export the published dataset of ``run_dir`` to ``out``; returns the card's counts."""
    if fmt not in FORMATS:
        raise ExportError(f"--format: one of {', '.join(FORMATS)}, got {fmt!r}")
    run_dir, out = Path(run_dir), Path(out)
    stats = read_stats(run_dir)
    files = data_files(run_dir)
    shards = plan(files, shard_size)
    settings = {
        "format": fmt,
        "shard_size": shard_size,
        "dataset": dataset_fingerprint(files, stats),
        "version": VERSION,
    }
    out.mkdir(parents=True, exist_ok=True)
    check_target(out, settings)
    writer = _writer(fmt, out)
    t0 = time.perf_counter()
    records = run_shards(out, shards, settings, writer, log)
    if hasattr(writer, "finish"):
        writer.finish(shards)
    shutil.rmtree(out / "_staging", ignore_errors=True)
    counts = summarize(fmt, records)
    check_counts(fmt, counts, stats)
    seconds = time.perf_counter() - t0
    region = region_conditioned(files)
    atomic_write_json(
        out / "export.json",
        {
            "format": fmt,
            "settings": settings,
            "shards": len(shards),
            "condition": "region" if region else "type",
            **counts,
        },
    )
    text = card(fmt, run_dir, settings, counts, len(shards), seconds, region)
    atomic_write_bytes(out / "README.md", text.encode())
    return counts
