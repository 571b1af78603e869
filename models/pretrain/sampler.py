"""Task mixing: how many of the next batch's examples each task gets.

- ``dynamic`` (Piergiovanni et al., "Dynamic Pretraining of Vision-Language Models"): a task's share is
  proportional to its loss summed over the last K steps, so harder (higher-loss) tasks get more samples;
  every task keeps at least ``min_per_task`` samples. Before any loss is seen the shares are uniform.
- ``uniform``: equal shares.  ``proportional``: shares proportional to each task's pool size.
- ``round_robin``: the whole batch goes to one task, cycling through the tasks step by step.
"""

from __future__ import annotations

from collections import deque

STRATEGIES = ("dynamic", "uniform", "proportional", "round_robin")


def apportion(weights: dict[str, float], total: int, minimum: int) -> dict[str, int]:
    """Split `total` into integers: `minimum` each, the rest proportional to `weights` (largest remainder)."""
    names = list(weights)
    rest = total - minimum * len(names)
    wsum = sum(max(w, 0.0) for w in weights.values())
    raw = {n: rest * (max(weights[n], 0.0) / wsum if wsum > 0 else 1 / len(names)) for n in names}
    counts = {n: minimum + int(raw[n]) for n in names}
    left = total - sum(counts.values())
    # the leftover examples go to the largest fractional parts (ties: task order)
    for n in sorted(names, key=lambda n: -(raw[n] - int(raw[n])))[:left]:
        counts[n] += 1
    return counts


class TaskSampler:
    def __init__(
        self,
        sizes: dict[str, int],
        batch_size: int,
        strategy: str = "dynamic",
        window: int = 100,
        min_per_task: int = 4,
    ):
        if strategy not in STRATEGIES:
            raise ValueError(f"mixing: {strategy!r} is not one of {STRATEGIES}")
        self.tasks, self.sizes = list(sizes), dict(sizes)
        self.batch_size, self.strategy, self.min = batch_size, strategy, min_per_task
        self.window = window
        self.history: dict[str, deque] = {t: deque(maxlen=window) for t in self.tasks}

    def allocate(self, step: int) -> dict[str, int]:
        """Examples per task for `step` (sums to the batch size)."""
        if self.strategy == "round_robin":
            pick = self.tasks[step % len(self.tasks)]
            return {t: (self.batch_size if t == pick else 0) for t in self.tasks}
        if self.strategy == "uniform":
            weights = {t: 1.0 for t in self.tasks}
        elif self.strategy == "proportional":
            weights = {t: float(self.sizes[t]) for t in self.tasks}
        else:  # dynamic: the loss accumulated over the last K steps
            weights = {t: sum(self.history[t]) for t in self.tasks}
            if not all(self.history[t] for t in self.tasks):
                weights = {t: 1.0 for t in self.tasks}
        return apportion(weights, self.batch_size, self.min)

    def update(self, losses: dict[str, float]) -> None:
        """Record this step's loss of every task that was sampled."""
        for t, v in losses.items():
            self.history[t].append(float(v))

    def state_dict(self) -> dict:
        return {"history": {t: list(h) for t, h in self.history.items()}}

    def load_state_dict(self, state: dict) -> None:
        for t, h in state.get("history", {}).items():
            if t in self.history:
                self.history[t].extend(h)
