"""Fine-tuning across two Ray Train workers (DDP over gloo, fractional CPUs on one machine)."""

import pytest

from jade.app.runner import run_manifest
from jade.models import factory
from jade.pipeline.executor import RayExecutor
from tests.tiny import TINY


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(900)  # a Ray cluster, two workers, a tiny world: minutes on 2 shared cores
def test_filter_fine_tunes_with_two_workers(tmp_path):
    ex = RayExecutor(num_cpus=2)
    try:
        sets = [*TINY, "resources.train.workers=2", "resources.train.num_cpus=0.5"]
        summaries = run_manifest(
            "sample", str(tmp_path / "run"), sets, ["examples", "finetune_filter"], executor=ex
        )
    finally:
        ex.shutdown()
    assert summaries["finetune_filter"]["steps"] == 5
    model, _ = factory.load(str(tmp_path / "run" / "checkpoints" / "filter"))
    assert factory.read_meta(tmp_path / "run" / "checkpoints" / "filter")["role"] == "filter"
    del model


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(900)  # a Ray cluster, two workers, a tiny world: minutes on 2 shared cores
def test_filter_fine_tunes_with_fsdp_on_two_workers(tmp_path):
    """resources.train.strategy=fsdp through Ray Train: each worker shards the model (gloo on CPUs); rank 0
    writes a plain checkpoint that records the strategy."""
    ex = RayExecutor(num_cpus=2)
    try:
        sets = [
            *TINY,
            "resources.train.workers=2",
            "resources.train.num_cpus=0.5",
            "resources.train.strategy=fsdp",
            "models.filter.train.micro_batch=4",
        ]
        summaries = run_manifest(
            "sample", str(tmp_path / "run"), sets, ["examples", "finetune_filter"], executor=ex
        )
    finally:
        ex.shutdown()
    assert summaries["finetune_filter"]["steps"] == 5
    ckpt = tmp_path / "run" / "checkpoints" / "filter"
    model, _ = factory.load(str(ckpt))
    training = factory.read_meta(ckpt)["training"]
    assert training["strategy"] == "fsdp" and training["workers"] == 2 and training["micro_batch"] == 4
    del model
