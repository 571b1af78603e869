"""The stage contract (datatrove's step/executor split): a stage holds logic, the framework keeps the books.

A stage declares, as attributes:

- ``name``: what records, logs and ``--stages`` call it;
- ``outputs``: the files it writes (`ShardFiles` per shard, `StageFiles` for the whole stage), declared once,
  in its own module;
- ``inputs``: the outputs of earlier stages that it reads, handed to it by the application that assembles the
  pipeline (a stage never imports another stage, nor names one): the framework finds their producers, orders
  the stages and fingerprints each one from what it reads;
- ``settings``: what its output depends on (a dataclass, fingerprinted; resources are not);
- ``version``: of its output format (bump it to invalidate earlier records);

and one method that does the work:

- `WholeStage` (training examples, fine-tuning): ``run(ctx)`` does the work and returns a summary; the runner
  skips it when its completion record carries the same fingerprint.
- `ShardStage` (ingest ... publish): ``worker(run, runtime)`` builds, once per worker (a Ray actor or the
  driver), a callable that takes one `ShardRef` and returns a `ShardResult`: the tables it made and the
  counts of what it did. The framework (`pipeline.shardmap`) does the rest, the same way for every stage: it
  skips shards whose records match, writes the tables atomically, removes the shard's stale files, writes
  the completion record last, records a shard that raised, and merges counts. ``reads_earlier``: a shard's
  output also depends on the shards before it (deduplication). ``prepare`` runs before the shards when any is
  to do, ``finish`` once they are done.

A stage never imports another stage or Ray.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from jade.formats.samples import ShardRef
from jade.pipeline.executor import Executor
from jade.pipeline.resources import StageResources
from jade.pipeline.rundir import RunDir

__all__ = [
    "Context",
    "Files",
    "PART",
    "Runtime",
    "ShardFiles",
    "ShardResult",
    "ShardStage",
    "Stage",
    "StageFiles",
    "WholeStage",
]

log = logging.getLogger("jade")
PART = "[0-9]" * 5  # the glob of a 5-digit part number


@dataclass(frozen=True)
class ShardFiles:
    """Files a shard stage writes for each shard: ``pattern``, relative to the run directory, with ``{shard}``
    (and ``{part}`` / ``{parts}``, 5 digits each, for a shard written in several files)."""

    pattern: str

    def path(self, shard: str, part: int = 0, parts: int = 1) -> str:
        return self.pattern.format(shard=shard, part=f"{part:05d}", parts=f"{parts:05d}")

    def glob(self, shard: str = "*") -> str:
        """Every file of ``shard`` (exactly: "train-a-*" would also match a shard named "a-00000"), or of every
        shard."""
        return self.pattern.format(shard=shard, part=PART, parts=PART)


@dataclass(frozen=True)
class StageFiles:
    """A whole stage's output: one file or folder, relative to the run directory."""

    path: str


Files = ShardFiles | StageFiles


class Stage(ABC):
    name: str
    version: int = 1
    inputs: tuple[Files, ...] = ()
    outputs: tuple[Files, ...] = ()
    settings: Any = None


class WholeStage(Stage):
    @abstractmethod
    def run(self, ctx: Context) -> dict:
        """Do the work, writing outputs atomically; returns a summary for the completion record."""


class ShardStage(Stage):
    reads_earlier: bool = False
    resources: StageResources = StageResources()

    @abstractmethod
    def worker(self, run: RunDir, runtime: Runtime) -> Callable[[ShardRef], ShardResult]:
        """Build (once per worker) the callable that does one shard."""

    def owns(self, shard_id: str) -> list[str]:
        """Globs (relative to the run directory) of every file this stage writes for a shard: what is not
        rewritten by a new result is stale and removed."""
        return [o.glob(shard_id) for o in self.outputs if isinstance(o, ShardFiles)]

    def prepare(self, ctx: Context, shards: list[ShardRef]) -> None:
        """Before the shards are mapped, when any is to do (``shards``: every shard with current inputs, in run
        order): the work that spans shards, done once (deduplication's index). Nothing by default."""

    def finish(self, ctx: Context, published: list[str]) -> dict | None:
        """After the shards (``published``: the shards with a current record): a summary of the whole stage."""
        return None


@dataclass
class Context:
    run: RunDir
    executor: Executor
    stages: list[Stage] = field(default_factory=list)  # the run's stages, in order
    shards: list[ShardRef] = field(default_factory=list)  # the run's image shards, in order
    fingerprints: dict[str, str] = field(default_factory=dict)  # stage name -> fingerprint of its settings
    shard_fps: dict[str, dict[str, str]] = field(default_factory=dict)  # shard stage -> shard -> fingerprint
    # shard id -> {"stage", "error"}: shards that failed in this run; later stages leave them out
    failed_shards: dict[str, dict] = field(default_factory=dict)
    threads: int | None = None  # torch threads per worker (None: the cores over the pool size)

    def fp(self, stage: str) -> str:
        return self.fingerprints[stage]

    def producer(self, files: Files) -> Stage:
        """The stage of this run that declares ``files`` among its outputs."""
        for st in self.stages:
            if files in st.outputs:
                return st
        raise KeyError(f"no stage of this run writes {files}")

    def upstream(self, stage: Stage) -> list[Stage]:
        """The stages ``stage`` reads from, in the order of its inputs (each once)."""
        return list({id(p): p for p in (self.producer(i) for i in stage.inputs)}.values())

    def lineage(self, stage: Stage) -> list[Stage]:
        """Every shard stage that ``stage`` depends on, directly or not, and itself, in run order."""
        seen: set[str] = set()
        todo = [stage]
        while todo:
            st = todo.pop()
            if st.name not in seen:
                seen.add(st.name)
                todo += self.upstream(st)
        return [st for st in self.stages if st.name in seen and isinstance(st, ShardStage)]

    def records(self, stage: Stage, shards: list[str]) -> dict[str, list[dict]]:
        """The current completion records of every shard stage in ``stage``'s lineage, for ``shards`` (each
        list aligned with ``shards``)."""
        out = {}
        for st in self.lineage(stage):
            found = self.run.done_many(st.name, {s: self.shard_fps[st.name].get(s, "") for s in shards})
            recs = []
            for s in shards:
                rec = found[s]
                if rec is None:
                    raise RuntimeError(f"{stage.name}: shard {s} has no current {st.name} record")
                recs.append(rec)
            out[st.name] = recs
        return out


@dataclass(frozen=True)
class Runtime:
    """How a shard worker runs (never part of a fingerprint: outputs do not depend on it)."""

    batch_size: int = 16
    threads: int = 1
    # the fingerprint of the stage that wrote each input the stage reads (for provenance), and its own
    inputs: tuple[tuple[Files, str], ...] = ()
    own: str = ""
    shard_order: tuple[str, ...] = ()  # the run's shards, in order

    def fingerprint(self, files: Files) -> str:
        """The fingerprint of the stage that wrote ``files`` (an input of this stage)."""
        return dict(self.inputs)[files]


@dataclass
class ShardResult:
    """What a shard stage made of one shard: tables by path (relative to the run directory), counts (nested
    dicts of ints, summed over shards into stats.json) and the number of images it handled (progress)."""

    tables: dict[str, pa.Table]
    counts: dict[str, Any]
    images: int
    note: dict[str, Any] = field(default_factory=dict)  # kept in the record, never summed
