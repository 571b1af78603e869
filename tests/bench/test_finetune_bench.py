"""bench/finetune_gpu.py: the factory's training loop under a manifest's settings, measured against the plan.
Its CPU path at a tiny size (the full size needs a GPU machine), and the plan within +-25% of the measured peak
memory at a mid size, in fresh processes (slow)."""

import json
import os
import subprocess
import sys

import pytest

from bench import finetune_gpu
from tests.shared import ROOT

OFF = [
    "models.generator.train.precision=fp32",
    "models.generator.train.micro_batch=null",
    "models.generator.train.gradient_checkpointing=false",
    "models.generator.train.freeze=[]",
]


def test_finetune_bench_tiny_on_cpu(tmp_path):
    report = finetune_gpu.run(tmp_path, size="tiny", steps=1, sets=["models.generator.train.batch_size=4", "models.generator.train.micro_batch=2"],
                              device="cpu", engine=True)  # fmt: skip
    assert report["steps"] == 1 and report["steps_per_s"] > 0 and report["measured_peak_gib"] > 0
    assert (
        report["plan"]["trainable_params"] < report["plan"]["params"]
    )  # cc3m's defaults: the encoder frozen
    assert "bf16" in report["settings"] and "gradient checkpointing" in report["settings"]
    assert report["hf_engine_images_per_s"] > 0
    assert json.loads((tmp_path / "finetune-tiny.json").read_text())["size"] == "tiny"


def _measure(tmp_path, name: str, sets: list[str]) -> dict:
    out = tmp_path / name
    cmd = [sys.executable, "-m", "bench.finetune_gpu", "--size", "mid", "--device", "cpu", "--steps", "2",
           "--no-engine", "--out", str(out), *[x for s in sets for x in ("--set", s)]]  # fmt: skip
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}  # freed blocks go back: RSS follows live memory
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, capture_output=True, timeout=1200)
    return json.loads((out / "finetune-mid.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, sets",
    [
        (
            "defaults",
            ["models.generator.train.batch_size=16"],
        ),  # bf16, frozen encoder, checkpointing, micro 8
        ("everything-off", [*OFF, "models.generator.train.batch_size=8"]),
        ("activations", [*OFF, "models.generator.train.batch_size=24"]),
        ("lora", ["models.generator.train.batch_size=16", "models.generator.train.lora={r: 16}"]),
    ],
)
def test_plan_is_within_25_percent_of_measured_cpu_memory(tmp_path, name, sets):
    """Peak RSS over the training steps minus RSS before them, in a fresh process per setting, against the
    plan computed for a CPU (no foreach-AdamW temporaries)."""
    report = _measure(tmp_path, name, sets)
    assert 0.75 <= report["plan_over_measured"] <= 1.25, report
