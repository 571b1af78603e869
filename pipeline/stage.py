"""The stage contract: a name, the stages it reads from, the settings it depends on, one run method.

A stage's logic is plain Python over a shard or a dataset; where it runs (in-process or on Ray actors) is
the executor's business. The runner fingerprints (settings + upstream fingerprints, and the stage's own
`version` when it has one, bumped when its output format changes) and skips a stage whose completion record
carries the same fingerprint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from jade.pipeline.config import Manifest
from jade.pipeline.rundir import RunDir

log = logging.getLogger("jade")


@dataclass
class Context:
    manifest: Manifest
    run: RunDir
    executor: Any  # pipeline.executor.LocalExecutor | RayExecutor
    fingerprints: dict[str, str] = field(default_factory=dict)  # stage name -> fingerprint of this run
    # shard id -> {"stage", "error"}: shards that failed in this run; later stages leave them out
    failed_shards: dict[str, dict] = field(default_factory=dict)

    def fp(self, stage: str) -> str:
        return self.fingerprints[stage]


class Stage(Protocol):
    name: str
    after: tuple[str, ...]  # upstream stages whose outputs this one reads

    def settings(self, m: Manifest) -> dict:
        """The manifest settings this stage's output depends on (resources excluded)."""
        ...

    def run(self, ctx: Context) -> dict:
        """Do the work, writing outputs atomically; returns a summary for the completion record."""
        ...
