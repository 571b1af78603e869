"""FSDP (torch's fully_shard per layer, `models.tuning.shard`) on 2 CPU workers over gloo trains the same model
as DDP, saves a plain checkpoint, and resumes exactly from its own (gathered) resume checkpoints."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from jade.models import factory
from jade.models.specs import Training
from jade.models.train import TrainJob, train_loop
from tests.models.test_train_options import ARCH, data, proc  # noqa: F401  (fixtures)

# Both average the same per-worker gradients; the sums differ in rounding only. The key projections' biases
# are left out: their gradient is exactly zero (softmax ignores a constant added to every key), so AdamW moves
# them by the sign of rounding noise, up to lr a step, under either strategy.
ATOL = 2e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp(model):
    return torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)


def _worker(rank: int, port: int, jobs: list) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        for (
            job
        ) in jobs:  # as the executor calls it: the DDP hook; the loop shards instead when job.strategy=fsdp
            train_loop(job, rank=rank, world_size=2, prepare_model=_ddp)
            dist.barrier()
    finally:
        dist.destroy_process_group()


def _job(data, out, strategy: str, train: Training, resume=None) -> TrainJob:  # noqa: F811
    return TrainJob(
        examples=str(data / "ex.parquet"),
        out_dir=str(out),
        arch=ARCH,
        train=train,
        processor_dir=str(data / "proc"),
        threads=1,
        strategy=strategy,
        resume_dir=str(resume) if resume else None,
        checkpoint_every=2,
        meta={"role": "t", "fingerprint": "x"},
    )


@pytest.mark.slow
def test_fsdp_on_two_cpu_workers_matches_ddp(tmp_path, data):  # noqa: F811
    train = Training(steps=3, batch_size=4, lr=1e-3, warmup_steps=1, micro_batch=2)
    jobs = [
        _job(data, tmp_path / "ddp", "ddp", train),
        _job(data, tmp_path / "fsdp", "fsdp", train, tmp_path / "resume"),
        _job(
            data, tmp_path / "fsdp2", "fsdp", train, tmp_path / "resume"
        ),  # resumes from step 2 of the above
    ]
    mp.spawn(_worker, args=(_free_port(), jobs), nprocs=2)
    ddp = factory.load(str(tmp_path / "ddp"))[0].state_dict()
    fsdp = factory.load(str(tmp_path / "fsdp"))[0].state_dict()
    resumed = factory.load(str(tmp_path / "fsdp2"))[0].state_dict()
    init = factory.build_model(ARCH, factory.load_processor(data / "proc"), seed=0).state_dict()
    assert ddp.keys() == fsdp.keys()
    for k in ddp:
        if not k.endswith("k_proj.bias"):
            assert torch.allclose(ddp[k], fsdp[k], atol=ATOL, rtol=0), k
        assert torch.equal(resumed[k], fsdp[k]), k  # resumed exactly
    assert not torch.equal(fsdp["model.language_model.layers.0.mlp.up_proj.weight"],
                           init["model.language_model.layers.0.mlp.up_proj.weight"])  # fmt: skip
    assert factory.read_meta(tmp_path / "fsdp")["training"]["strategy"] == "fsdp"
