"""Where stages run: in-process (`LocalExecutor`, tests and debugging) or on Ray (`RayExecutor`), behind the
`Executor` protocol.

`map_shards` maps a picklable worker factory over shard descriptors (Ray Data, an actor pool with fractional
CPUs so 2 cores never deadlock); `train` runs a training loop with Ray Train's `TorchTrainer`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from jade.pipeline.resources import StageResources, TrainResources

__all__ = [
    "Executor",
    "Factory",
    "LocalExecutor",
    "RayExecutor",
    "Sink",
    "Worker",
    "WorkerFactory",
    "inject_fault",
]

log = logging.getLogger("jade")
Worker = Callable[[dict], dict]  # one shard descriptor -> its summary (a failed one has "error")
Factory = Callable[[], Worker]  # builds a worker where it runs (picklable: `WorkerFactory`)
Sink = Callable[[dict], None] | None  # receives each summary as it arrives


class Executor(Protocol):
    """What the runner needs from where stages run."""

    name: str

    def map_shards(
        self, factory: Factory, items: list[dict], res: StageResources, on_result: Sink = None, name: str = ""
    ) -> list[dict]:
        """Build a worker with ``factory()`` on each of up to ``res.pool()`` workers and call it on every item;
        each summary goes to ``on_result`` as it arrives; a worker that raises gives ``{"shard", "error"}``.
        ``name``: the stage's, for messages."""
        ...

    def train(self, fn: Callable, job: Any, res: TrainResources, storage: Path) -> dict:
        """Run ``fn(job, rank=, world_size=, prepare_model=, report=)`` on ``res.workers`` workers."""
        ...

    def gpus(self) -> int:
        """GPUs the executor can use."""
        ...

    def shutdown(self) -> None: ...


class WorkerFactory:
    """A picklable worker factory: the class and its arguments travel to the actors, not an instance."""

    def __init__(self, cls, *args):
        self.cls, self.args = cls, args

    def __call__(self):
        return self.cls(*self.args)


def inject_fault(item: dict) -> None:
    """Test hook for the fault-tolerance tests: JADE_FAULT=MODE:STAGE:SHARD[:MARKER] makes that shard's call
    `raise` (every attempt), `hang` (sleep an hour, for killing the driver at a known point) or `exit-once`
    (the worker process dies with os._exit on its first attempt; MARKER is the file that remembers it)."""
    spec = os.environ.get("JADE_FAULT")
    if not spec:
        return
    mode, stage, shard, *marker = spec.split(":", 3)
    if (item.get("stage"), item.get("shard_id")) != (stage, shard):
        return
    if mode == "raise":
        raise RuntimeError(f"injected fault (JADE_FAULT) on {stage} shard {shard}")
    if mode == "hang":
        time.sleep(3600)
    if mode == "exit-once" and marker and not Path(marker[0]).exists():
        Path(marker[0]).touch()
        os._exit(1)


def _safe_call(worker: Callable[[dict], dict], item: dict) -> dict:
    """A shard that raises becomes a failed-shard summary with its error; the other shards go on."""
    try:
        inject_fault(item)
        return worker(item)
    except Exception as e:  # noqa: BLE001 - recorded as a failed shard and reported by the runner
        return {
            "shard": item.get("shard_id"),
            "error": f"{type(e).__name__}: {e}",
            "traceback": traceback.format_exc(),
        }


class LocalExecutor:
    name = "local"

    def map_shards(
        self, factory: Factory, items: list[dict], res: StageResources, on_result: Sink = None, name: str = ""
    ) -> list[dict]:
        if not items:
            return []
        worker = factory()
        out = []
        for item in items:
            out.append(_safe_call(worker, item))
            if on_result:
                on_result(out[-1])
        return out

    def train(self, fn: Callable, job: Any, res: TrainResources, storage: Path) -> dict:
        return fn(job)

    def gpus(self) -> int:
        import torch

        return torch.cuda.device_count()

    def shutdown(self) -> None:
        pass


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
        # Workers' output goes to Ray's session logs, not to this console (the driver shows progress itself).
        if address:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            log.info("ray: joined the cluster at %s", ray.get_runtime_context().gcs_address)
        else:
            # A private local cluster of this run's own. address="local" never looks for other instances: a
            # plain ray.init() would join the one `ray start` last recorded in /tmp/ray/ray_current_cluster and,
            # with several Ray instances on the machine, log "Found multiple active Ray instances". Token auth
            # is for clusters that others reach, and this one is ours.
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            # Ray starts its workers at nice 15: under any other load the stages' actors and the trainer then
            # get a sliver of the CPU while the driver waits. They do the run's work: same priority as it.
            os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(
                address="local",
                num_cpus=self.num_cpus or os.cpu_count(),
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
            self._started = True
            log.info(
                "ray: started a private local cluster for this run at %s",
                ray.get_runtime_context().gcs_address,
            )
        _quiet_ray()

    def gpus(self) -> int:
        import ray

        self._init()
        return int(ray.cluster_resources().get("GPU", 0))

    def check_gpus(self, wanted: float, what: str) -> None:
        if wanted and self.gpus() == 0:
            raise RuntimeError(
                f"{what} asks for num_gpus={wanted} but the Ray cluster has no GPUs; set its num_gpus to 0"
            )

    def stage_gpus(self, res: StageResources) -> float:
        """GPUs per actor: the manifest's num_gpus, or (None: generate and filter by default) 1 per actor when
        the cluster has GPUs and 0 when it has none."""
        if res.num_gpus is not None:
            return res.num_gpus
        return 1.0 if self.gpus() else 0.0

    def map_shards(
        self, factory: Factory, items: list[dict], res: StageResources, on_result: Sink = None, name: str = ""
    ) -> list[dict]:
        """Each shard summary as it arrives goes to `on_result` (progress). A worker process that dies is
        restarted and its shard retried by Ray Data (actor pools default to max_restarts=-1 and
        max_task_retries=-1); a shard that raises comes back as a failed-shard summary."""
        import ray.data
        from ray.data import ActorPoolStrategy

        self._init()
        num_gpus = self.stage_gpus(res)
        self.check_gpus(num_gpus, f"the resources of stage {name}" if name else "a stage's resources")
        if not items:
            return []
        ds = ray.data.from_items([{"item": json.dumps(it)} for it in items], override_num_blocks=len(items))
        lo, hi = res.pool()
        hi = max(1, min(hi, len(items)))
        out = ds.map_batches(
            _ShardActor,
            fn_constructor_kwargs={"factory": factory},
            batch_size=1,
            # One shard per actor at a time: a shard never waits behind another while an actor is idle.
            compute=ActorPoolStrategy(min_size=min(lo, hi), max_size=hi, max_tasks_in_flight_per_actor=1),
            num_cpus=res.num_cpus,
            num_gpus=num_gpus or None,
        )
        results = []
        for row in out.iter_rows():
            results.append(json.loads(row["summary"]))
            if on_result:
                on_result(results[-1])
        return results

    def train(self, fn: Callable, job: Any, res: TrainResources, storage: Path) -> dict:
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

        self._init()
        use_gpu = res.use_gpu if res.use_gpu is not None else self.gpus() > 0
        if use_gpu:
            self.check_gpus(1, "resources.train.use_gpu")
        trainer = TorchTrainer(
            _ray_train_worker,
            train_loop_config={"fn": fn, "job": dataclasses.replace(job, use_gpu=use_gpu)},
            scaling_config=ScalingConfig(
                num_workers=res.workers, use_gpu=use_gpu, resources_per_worker={"CPU": res.num_cpus}
            ),
            run_config=RunConfig(name=Path(job.out_dir).name, storage_path=str(storage)),
        )
        result = trainer.fit()
        if result.error:
            raise result.error
        return dict(result.metrics or {})

    def shutdown(self) -> None:
        import ray

        if self._started and ray.is_initialized():
            ray.shutdown()


def _quiet_ray() -> None:
    """Ray's messages off the console and into the run's log: Ray Data's progress bars and start-up lines off,
    and Ray's own console handlers removed from its loggers, whose records then reach the root handlers (the
    console shows others' errors only; the run's log file takes everything)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for name in ("ray", "ray.data", "ray.train", "ray.tune"):
        lg = logging.getLogger(name)
        for h in [
            h
            for h in lg.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
        ]:
            lg.removeHandler(h)
        lg.propagate = True
        lg.setLevel(logging.INFO)


def _ray_train_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    world = ctx.get_world_size()
    loop_config["fn"](
        loop_config["job"],
        rank=ctx.get_world_rank(),
        world_size=world,
        prepare_model=_prepare_ddp if world > 1 else None,
        report=lambda m: ray.train.report(m),
    )


def _prepare_ddp(model):
    """DDP over the workers. Vision-language checkpoints carry parameters that a task never uses (SigLIP's
    pooling head under PaliGemma; a pretraining task's head on steps without that task), so unused
    parameters must be tolerated or the second step fails."""
    import ray.train.torch

    return ray.train.torch.prepare_model(model, parallel_strategy_kwargs={"find_unused_parameters": True})
