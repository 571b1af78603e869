"""Fine-tuning across two Ray Train workers (DDP over gloo, fractional CPUs on one machine)."""

import pytest

from jade.app.runner import run_manifest
from jade.models import factory
from jade.pipeline.executor import RayExecutor
from tests.tiny import TINY


@pytest.mark.slow
@pytest.mark.ray
def test_filter_fine_tunes_with_two_workers(tmp_path):
    ex = RayExecutor(num_cpus=2)
    try:
        sets = [*TINY, "resources.train.workers=2", "resources.train.num_cpus=0.5"]
        summaries = run_manifest(
            "sample", str(tmp_path / "run"), sets, ["ingest", "finetune_filter"], executor=ex
        )
    finally:
        ex.shutdown()
    assert summaries["finetune_filter"]["steps"] == 5
    model, _ = factory.load(str(tmp_path / "run" / "checkpoints" / "filter"))
    assert factory.read_meta(tmp_path / "run" / "checkpoints" / "filter")["role"] == "filter"
    del model
