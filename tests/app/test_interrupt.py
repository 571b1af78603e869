"""A stage that is stopped says so: `jade run` killed with SIGTERM in the middle of fine-tuning prints where it
stopped and why, never "done", writes no completion record, and exits with 128 + 15."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.tiny import TINY


def test_sigterm_in_fine_tuning_says_where_it_stopped(tmp_path):
    out = tmp_path / "run"
    sets = [*TINY, "models.generator.train={steps: 100000, batch_size: 2, warmup_steps: 2}"]
    cmd = [sys.executable, "-m", "jade.app.cli", "run", "sample", "--out", str(out), "--executor", "local"]
    for s in sets:
        cmd += ["--set", s]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    progress = out / "checkpoints" / ".generator.tmp.progress.json"
    deadline = time.time() + 110
    while not (progress.exists() and json.loads(progress.read_text() or "{}").get("step", 0) >= 51):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "finetune_generator: stopped at " in err and "/100000 steps: SIGTERM" in err, err
    assert "100000/100000" not in err and "finetune_generator: done" not in err
    assert "jade: stopped (SIGTERM)" in err
    assert not (out / "_state" / "finetune_generator" / "_stage.json").exists()
    assert not Path(out / "checkpoints" / "generator").exists()
