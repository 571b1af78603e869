"""Progress of a stage: shards done (or training steps), images/s and an ETA.

On the console (`Bar`): a bar with an ETA redrawn in place on a terminal, otherwise a plain line at most every
`LINE_EVERY_S` seconds (and at the end), so a run prints a few lines per stage whatever its size. Every shard's
line also goes to the run's log file (DEBUG). `jade status DIR` computes the same figures from the records
on disk (`stage_progress`), so it works while a run is going on, from another shell.
"""

from __future__ import annotations

import logging
import sys
import time

from jade.pipeline.rundir import STATE, RunDir, read_json

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


def progress_path(run: RunDir, stage: str) -> str:
    """Where a stage's latest attempt records its start, relative to the run directory."""
    return f"{STATE}/_progress/{stage}.json"


LINE_EVERY_S = 30.0


class Bar:
    """One stage's progress on the console: redrawn in place on a terminal, else a line every `LINE_EVERY_S`."""

    def __init__(self, stage: str, total: int, unit: str = "shards"):
        self.stage, self.total, self.unit = stage, total, unit
        self.tty = sys.stderr.isatty()
        self.last = time.time()

    def update(self, done: int, detail: str, eta: float | None, final: bool = False) -> None:
        text = f"{self.stage}: {done}/{self.total} {self.unit}, {detail}, {fmt_eta(eta)}"
        if self.tty:
            width = 24
            fill = int(width * done / max(1, self.total))
            sys.stderr.write(
                f"\r{self.stage:20s} [{'#' * fill}{'.' * (width - fill)}] {text[len(self.stage) + 2 :]}\x1b[K"
            )
            if final:
                sys.stderr.write("\n")
            sys.stderr.flush()
        elif final or time.time() - self.last >= LINE_EVERY_S:
            self.last = time.time()
            log.info("%s", text)

    def stop(self, done: int, reason: str) -> None:
        """The stage did not finish: say where it stopped and why (never "done")."""
        if self.tty:
            sys.stderr.write("\n")
        log.warning("%s: stopped at %d/%d %s: %s", self.stage, done, self.total, self.unit, reason)


class Progress:
    """Called with each shard summary as it arrives: shards done, images/s and the ETA of the stage, on the
    console (`Bar`) and, one line per shard, in the run's log."""

    def __init__(self, run: RunDir, stage: str, fp: str, total: int):
        self.stage, self.total, self.t0 = stage, total, time.time()
        self.done = self.failed = self.images = 0
        self.bar = Bar(stage, total)
        run.write_json(progress_path(run, stage), {"started_at": self.t0, "shards_total": total, "fp": fp})

    def __call__(self, summary: dict) -> None:
        if summary.get("error"):
            self.failed += 1
        else:
            self.done += 1
            self.images += shard_images(summary)
        finished = self.done + self.failed
        rate, eta = rate_and_eta(self.images, finished, self.total, time.time() - self.t0)
        detail = f"{self.images} images, {rate:.1f} images/s" + (
            f", {self.failed} failed" if self.failed else ""
        )
        log.debug(
            "%s: shard %s done (%d/%d), %s", self.stage, summary.get("shard"), finished, self.total, detail
        )
        self.bar.update(finished, detail, eta, final=finished == self.total)

    def stop(self, exc: BaseException) -> None:
        self.bar.stop(self.done + self.failed, stop_reason(exc))


def stage_progress(run: RunDir, stage: str, fp: str, shard_fps: dict[str, str]) -> dict | None:
    """images/s and ETA of a stage's latest attempt, from its progress file and its current shard records."""
    prog = run.read_json(progress_path(run, stage))
    if not prog or prog.get("fp") != fp:
        return None
    recs = [r for r in run.done_many(stage, shard_fps).values() if r]
    fresh = [r for r in recs if r.get("finished_at", 0) >= prog["started_at"]]  # done by this attempt
    total, done = prog["shards_total"], len(recs)
    last = max((r["finished_at"] for r in fresh), default=prog["started_at"])
    images = sum(shard_images(r) for r in fresh)
    rate, _ = rate_and_eta(images, len(fresh), total, last - prog["started_at"])
    left = total - done
    eta = (last - prog["started_at"]) / len(fresh) * left if fresh else None
    return {"shards_total": total, "shards_done": done, "images_per_s": rate, "eta_s": eta}


class TrainWatch:
    """While a training job runs (on a Ray Train worker or in process), show the progress its rank 0 writes to
    ``path`` ({"step", "steps", "loss", "eta_s"}) as a `Bar` of steps."""

    def __init__(self, path, stage: str, poll_s: float = 1.0):
        import threading

        self.path, self.stage, self.poll_s = path, stage, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.bar: Bar | None = None
        self.seen: dict | None = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._show(final=False)

    def _show(self, final: bool) -> None:
        p = read_json(self.path)
        if not p or p == self.seen and not final:
            return
        self.seen = p
        if self.bar is None:
            self.bar = Bar(self.stage, int(p["steps"]), unit="steps")
        self.bar.update(int(p["step"]), f"loss {p['loss']:.3f}", p.get("eta_s"), final=final)

    def __enter__(self) -> TrainWatch:
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        self._thread.join()
        if exc_type is not None:
            self._show(final=False)  # the last step the job reached
            step = int(self.seen["step"]) if self.seen else 0
            bar = self.bar or Bar(self.stage, int(self.seen["steps"]) if self.seen else 0, unit="steps")
            bar.stop(step, stop_reason(exc))
        elif self.bar is not None and self.seen is not None:
            self.seen["step"] = self.seen["steps"]
            self.bar.update(self.bar.total, "done", 0.0, final=True)


class Interrupted(BaseException):
    """The process was asked to stop (a signal): raised so that every stage on the way out says where it
    stopped. A BaseException, like KeyboardInterrupt: no `except Exception` swallows it."""


def stop_reason(exc: BaseException | None) -> str:
    if isinstance(exc, Interrupted):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    return f"{type(exc).__name__}: {exc}"
