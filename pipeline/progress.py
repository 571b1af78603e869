"""Progress of a shard stage, from its completion records: shards done, images/s and an ETA.

The driver logs one line per finished shard (`Progress`), and `jade status DIR` computes the same figures
from the records on disk (`stage_progress`), so it works while a run is going on, from another shell.
"""

from __future__ import annotations

import logging
import time

from jade.pipeline.rundir import RunDir, atomic_write_json, read_json

log = logging.getLogger("jade")


def shard_images(rec: dict) -> int:
    """The images a shard record says its stage handled (every shard stage records ``images``)."""
    return int(rec.get("images") or 0)


def rate_and_eta(
    images: int, shards_done: int, shards_total: int, elapsed: float
) -> tuple[float, float | None]:
    """images/s so far, and the seconds left at the same pace per shard (None before the first shard)."""
    rate = images / elapsed if elapsed > 0 else 0.0
    eta = elapsed / shards_done * (shards_total - shards_done) if shards_done else None
    return rate, eta


def fmt_eta(eta: float | None) -> str:
    if eta is None:
        return "ETA ?"
    m, s = divmod(int(round(eta)), 60)
    return f"ETA {m}m{s:02d}s" if m else f"ETA {s}s"


def progress_path(run: RunDir, stage: str):
    return run.state / "_progress" / f"{stage}.json"


class Progress:
    """Called with each shard summary as it arrives; logs shards done, images/s and the ETA of the stage."""

    def __init__(self, run: RunDir, stage: str, fp: str, total: int):
        self.stage, self.total, self.t0 = stage, total, time.time()
        self.done = self.failed = self.images = 0
        atomic_write_json(progress_path(run, stage), {"started_at": self.t0, "shards_total": total, "fp": fp})

    def __call__(self, summary: dict) -> None:
        if summary.get("error"):
            self.failed += 1
        else:
            self.done += 1
            self.images += shard_images(summary)
        finished = self.done + self.failed
        rate, eta = rate_and_eta(self.images, finished, self.total, time.time() - self.t0)
        log.info("%s: %d/%d shards%s, %d images, %.1f images/s, %s", self.stage, finished, self.total,
                 f" ({self.failed} failed)" if self.failed else "", self.images, rate, fmt_eta(eta))  # fmt: skip


def stage_progress(run: RunDir, stage: str, fp: str) -> dict | None:
    """images/s and ETA of a stage's latest attempt, from its progress file and its shard records."""
    prog = read_json(progress_path(run, stage))
    if not prog or prog.get("fp") != fp:
        return None
    recs = [read_json(p) for p in (run.state / stage).glob("*.json") if p.name != "_stage.json"]
    recs = [r for r in recs if r and r.get("fingerprint") == fp]
    fresh = [r for r in recs if r.get("finished_at", 0) >= prog["started_at"]]  # done by this attempt
    total, done = prog["shards_total"], len(recs)
    last = max((r["finished_at"] for r in fresh), default=prog["started_at"])
    images = sum(shard_images(r) for r in fresh)
    rate, _ = rate_and_eta(images, len(fresh), total, last - prog["started_at"])
    left = total - done
    eta = (last - prog["started_at"]) / len(fresh) * left if fresh else None
    return {"shards_total": total, "shards_done": done, "images_per_s": rate, "eta_s": eta}
