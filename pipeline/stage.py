"""The stage contract (datatrove's step/executor split): a stage holds logic, the framework keeps the books.

Two kinds of stage, each a name, the stages it reads from (``after``), the settings its output depends on, and
one method that does the work:

- `Stage` (whole-stage: training examples, fine-tuning): ``run(ctx)`` does the work and returns a summary;
  the runner skips it when its completion record carries the same fingerprint.
- `ShardStage` (ingest, generate, filter, publish): ``worker(run, settings, runtime)`` builds, once per
  worker (a Ray actor or the driver), a callable that takes one `ShardRef` and returns a `ShardResult`: the
  tables it made and the counts of what it did. The framework (`pipeline.shards`) does the rest, the same
  way for every stage: it skips shards whose records match, writes the tables atomically, removes the
  shard's stale files, writes the completion record last, records a shard that raised, and merges counts.

A stage never imports another stage or Ray.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from jade.formats.samples import ShardRef
from jade.pipeline.config import Manifest, StageResources
from jade.pipeline.executor import Executor
from jade.pipeline.rundir import RunDir

log = logging.getLogger("jade")


@dataclass
class Context:
    manifest: Manifest
    run: RunDir
    executor: Executor
    shards: list[ShardRef] = field(default_factory=list)  # the run's image shards, in order
    fingerprints: dict[str, str] = field(default_factory=dict)  # stage name -> fingerprint of its settings
    shard_stages: set[str] = field(default_factory=set)  # the names of the shard stages
    shard_fps: dict[str, dict[str, str]] = field(default_factory=dict)  # shard stage -> shard -> fingerprint
    # shard id -> {"stage", "error"}: shards that failed in this run; later stages leave them out
    failed_shards: dict[str, dict] = field(default_factory=dict)
    allow_models: bool = True  # False: a worker that would need to run a model fails its shard instead

    def fp(self, stage: str) -> str:
        return self.fingerprints[stage]


@dataclass(frozen=True)
class Runtime:
    """How a shard worker runs (never part of a fingerprint: outputs do not depend on it)."""

    batch_size: int = 16
    decode_rows: int = 256  # a model stage's sequences decoded together (`ModelStageResources.decode_rows`)
    threads: int = 1
    run_fingerprints: tuple[tuple[str, str], ...] = ()  # stage fingerprints of the run (for provenance)
    shard_order: tuple[str, ...] = ()  # the run's shards, in order
    allow_models: bool = True

    def fingerprint_of(self, stage: str) -> str:
        return dict(self.run_fingerprints)[stage]


@dataclass
class ShardResult:
    """What a shard stage made of one shard: tables by path (relative to the run directory), counts (nested
    dicts of ints, summed over shards into stats.json) and the number of images it handled (progress)."""

    tables: dict[str, pa.Table]
    counts: dict[str, Any]
    images: int
    note: dict[str, Any] = field(default_factory=dict)  # kept in the record, never summed


class Stage(Protocol):
    name: str
    after: tuple[str, ...]

    def settings(self, m: Manifest) -> Any:
        """What this stage's output depends on (JSON-able or a dataclass; resources excluded)."""
        ...

    def run(self, ctx: Context) -> dict:
        """Do the work, writing outputs atomically; returns a summary for the completion record."""
        ...


class ShardStage(Protocol):
    name: str
    after: tuple[str, ...]  # shard stages (read per shard) and whole stages (their fingerprints)

    def settings(self, m: Manifest) -> Any: ...

    def resources(self, m: Manifest) -> StageResources: ...

    def owns(self, shard_id: str) -> list[str]:
        """Globs (relative to the run directory) of every file this stage writes for a shard: what is not
        rewritten by a new result is stale and removed."""
        ...

    def worker(self, run: RunDir, settings: Any, runtime: Runtime) -> Callable[[ShardRef], ShardResult]: ...
