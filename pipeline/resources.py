"""Where a stage's work runs: the actor pool of a shard stage and the workers of a training job. Resources
never enter a fingerprint: outputs do not depend on them."""

from __future__ import annotations

from dataclasses import dataclass

from jade.typed import ConfigError, ranged, validate_choice

__all__ = [
    "STRATEGIES",
    "StageResources",
    "TrainResources",
]

STRATEGIES = ("ddp", "fsdp")  # how a training job spreads its model over its workers


@dataclass
class StageResources:
    actors: int = ranged(
        1, ge=1
    )  # a fixed pool of this many actors, unless min_actors / max_actors are given
    min_actors: int | None = ranged(
        None, ge=1
    )  # autoscaling pool: Ray Data grows it from min to max as work queues up
    max_actors: int | None = ranged(None, ge=1)
    num_cpus: float = ranged(
        0.5, ge=0
    )  # fractional by default: whole-CPU actors deadlock Ray Data on 2 cores
    # GPUs per actor; fractions let two stages' actors share one GPU. A subclass may default it to None: 1 per
    # actor when the cluster has GPUs, else 0 (the executor decides)
    num_gpus: float = ranged(0.0, ge=0)
    batch_size: int = ranged(16, ge=1)

    def validate(self, at: str) -> None:
        lo, hi = self.pool()
        if hi < lo:
            raise ConfigError(f"{at}: need min_actors <= max_actors (got {lo}, {hi})")

    def pool(self) -> tuple[int, int]:
        """(min, max) actor pool size."""
        return (self.min_actors or self.actors, self.max_actors or max(self.actors, self.min_actors or 1))


@dataclass
class TrainResources:
    workers: int = ranged(1, ge=1)
    num_cpus: float = ranged(1.0, ge=0)
    use_gpu: bool | None = None  # None: use GPUs when the cluster has them
    # ddp: every worker holds the whole model, gradients and optimizer state; fsdp: each worker holds 1/workers
    # of them (torch's fully_shard per layer), gathered layer by layer for compute (one worker: no difference)
    strategy: str = "ddp"

    def validate(self, at: str) -> None:
        validate_choice(self.strategy, STRATEGIES, f"{at}.strategy")
