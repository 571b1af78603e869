"""Where log lines go. The console shows the project's own progress (one line per stage and per step of
progress; a bar with an ETA on a terminal); everything else, Ray's chatter included, goes to the run's log
file (`_logs/run.log` in the run directory)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
CHATTY = (
    "ray",
    "ray.data",
    "ray.train",
    "ray.tune",
    "filelock",
    "urllib3",
    "fsspec",
    "datasets",
    "transformers",
)


def worker_logging() -> None:
    """Executor workers (Ray actors) start without logging set up: there, send the jade logger's lines to
    stderr, which Ray writes to the worker's log file. Where logging is set up (CLI, tests) this does nothing."""
    jade = logging.getLogger("jade")
    if not logging.getLogger().handlers and not jade.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        jade.addHandler(handler)
        jade.setLevel(logging.INFO)


def console_logging(verbose: bool = False) -> None:
    """The CLI's console: jade's INFO lines (DEBUG with verbose), others' warnings only."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(h)
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    handler.addFilter(_ConsoleFilter(verbose))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    logging.getLogger("jade").setLevel(logging.DEBUG)
    for name in CHATTY:
        logging.getLogger(name).setLevel(logging.INFO)


class _Stderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a line is written (tests swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _ConsoleFilter(logging.Filter):
    def __init__(self, verbose: bool):
        super().__init__()
        self.verbose = verbose

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "jade" or record.name.startswith("jade."):
            return record.levelno >= (logging.DEBUG if self.verbose else logging.INFO)
        return record.levelno >= logging.ERROR or (self.verbose and record.levelno >= logging.WARNING)


def run_log(path: Path) -> logging.Handler:
    """Everything (jade's DEBUG lines, Ray's and the libraries' INFO) to ``path``; returns the handler."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(logging.DEBUG)
    logging.getLogger().addHandler(handler)
    return handler
