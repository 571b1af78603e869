"""Where stages run: in-process (`LocalExecutor`, tests and debugging) or on Ray (`RayExecutor`).

`map_shards` maps a picklable worker factory over shard descriptors (Ray Data, an actor pool with fractional
CPUs so 2 cores never deadlock); `train` runs a training loop with Ray Train's `TorchTrainer`.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("jade")


class WorkerFactory:
    """A picklable worker factory: the class and its arguments travel to the actors, not an instance."""

    def __init__(self, cls, *args):
        self.cls, self.args = cls, args

    def __call__(self):
        return self.cls(*self.args)


def _safe_call(worker: Callable[[dict], dict], item: dict) -> dict:
    """A shard that raises becomes a failed-shard summary with its error; the other shards go on."""
    try:
        return worker(item)
    except Exception as e:  # noqa: BLE001 - recorded, reported and re-raised by the runner
        return {
            "shard": item.get("shard_id"),
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(),
        }


class LocalExecutor:
    name = "local"

    def map_shards(
        self, factory: Callable[[], Callable[[dict], dict]], items: list[dict], res: Any
    ) -> list[dict]:
        worker = factory()
        return [_safe_call(worker, item) for item in items]

    def train(self, fn: Callable, config: dict, res: Any, storage: Path) -> dict:
        return fn(config)

    def gpus(self) -> int:
        import torch

        return torch.cuda.device_count()


class _ShardActor:
    def __init__(self, factory):
        self.worker = factory()

    def __call__(self, batch: dict) -> dict:
        items = [json.loads(s) for s in batch["item"]]
        return {"summary": [json.dumps(_safe_call(self.worker, it), default=str) for it in items]}


class RayExecutor:
    """Starts (or joins, via RAY_ADDRESS) a Ray cluster on first use."""

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        self.address, self.num_cpus = address, num_cpus
        self._started = False

    def _init(self) -> None:
        import ray

        if ray.is_initialized():
            return
        address = self.address or os.environ.get("RAY_ADDRESS")
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            # A private local cluster: token auth is for clusters that others reach; this one is ours.
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(num_cpus=self.num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=True)
            self._started = True

    def gpus(self) -> int:
        import ray

        self._init()
        return int(ray.cluster_resources().get("GPU", 0))

    def check_gpus(self, wanted: float, what: str) -> None:
        if wanted and self.gpus() == 0:
            raise RuntimeError(
                f"{what} asks for num_gpus={wanted} but the Ray cluster has no GPUs; set it to 0"
            )

    def map_shards(
        self, factory: Callable[[], Callable[[dict], dict]], items: list[dict], res: Any
    ) -> list[dict]:
        import ray.data
        from ray.data import ActorPoolStrategy

        self._init()
        self.check_gpus(res.num_gpus, "resources")
        if not items:
            return []
        ds = ray.data.from_items([{"item": json.dumps(it)} for it in items], override_num_blocks=len(items))
        actors = max(1, min(res.actors, len(items)))
        out = ds.map_batches(
            _ShardActor,
            fn_constructor_kwargs={"factory": factory},
            batch_size=1,
            compute=ActorPoolStrategy(min_size=1, max_size=actors),
            num_cpus=res.num_cpus,
            num_gpus=res.num_gpus or None,
        ).take_all()
        return [json.loads(r["summary"]) for r in out]

    def train(self, fn: Callable, config: dict, res: Any, storage: Path) -> dict:
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        self._init()
        use_gpu = res.use_gpu if res.use_gpu is not None else self.gpus() > 0
        if use_gpu:
            self.check_gpus(1, "resources.train.use_gpu")
        trainer = TorchTrainer(
            _ray_train_worker,
            train_loop_config={"fn": fn, "config": {**config, "use_gpu": use_gpu}},
            scaling_config=ScalingConfig(
                num_workers=res.workers, use_gpu=use_gpu, resources_per_worker={"CPU": res.num_cpus}
            ),
            run_config=RunConfig(name=Path(config["out_dir"]).name, storage_path=str(storage)),
        )
        result = trainer.fit()
        if result.error:
            raise result.error
        return dict(result.metrics or {})

    def shutdown(self) -> None:
        import ray

        if self._started and ray.is_initialized():
            ray.shutdown()


def _ray_train_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    world = ctx.get_world_size()
    loop_config["fn"](
        loop_config["config"],
        rank=ctx.get_world_rank(),
        world_size=world,
        prepare_model=ray.train.torch.prepare_model if world > 1 else None,
        report=lambda m: ray.train.report(m),
    )
