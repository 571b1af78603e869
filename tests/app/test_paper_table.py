"""The paper table's statistics and its JSON contract (pure: numbers in, table out), the benchmark overlap
check, and the whole table on a tiny run (slow)."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jade.app.paper_data import overlap
from jade.app.paper_render import CONTRACT, render, table_json
from jade.app.paper_stats import min_detectable, paired, summary, verdict
from jade.app.paper_table import DIFFERENCES, SETTINGS
from jade.sampleworld import WorldConfig, write_world
from jade.sampleworld.benchmarks import BenchConfig, write_benchmarks


def test_summary_and_paired_difference():
    s = summary({0: 0.5, 1: 0.7, 2: None})
    assert s["mean"] == pytest.approx(0.6) and s["sd"] == pytest.approx(math.sqrt(0.02)) and s["seeds"] == 2
    d = paired({0: 0.6, 1: 0.8, 2: 0.7}, {0: 0.5, 1: 0.6, 2: 0.7})
    # per-seed differences 0.1, 0.2, 0.0: mean 0.1, sd 0.1, se 0.1 / sqrt(3)
    assert (
        d["mean"] == pytest.approx(0.1) and d["se"] == pytest.approx(0.1 / math.sqrt(3)) and d["seeds"] == 3
    )
    assert paired({0: 1.0}, {0: 0.0})["se"] is None
    assert verdict({"mean": 0.1, "se": 0.02}, "b", "a") == "b ahead (5.0 SE)"
    assert verdict({"mean": -0.1, "se": 0.02}, "b", "a") == "a ahead (5.0 SE)"
    assert verdict({"mean": 0.01, "se": 0.02}, "b", "a").startswith("no difference shown")
    diffs = {"x": {"m": {"se": 0.01}}, "y": {"m": {"se": 0.03}}}
    assert min_detectable(diffs, "m") == pytest.approx(0.06)


def _results(seeds):
    """Made-up per-run numbers: b is 0.05 ahead of every other setting on every metric, with seed noise."""
    out = {}
    for n in SETTINGS:
        for s in seeds:
            base = 0.5 + (0.05 if n == "b" else 0.0) + 0.01 * s
            out[n, s] = {k: base for k in CONTRACT} | {"retrieval_i2t_r5": base, "minutes": 1.0, "steps": 10}
            out[n, s]["vqa_scores"] = [base + 0.1, base - 0.1, base]  # three questions
    return out


def test_table_json_keeps_the_contract():
    seeds = [0, 1, 2]
    chance = {k: 0.1 for k in CONTRACT} | {
        "constant_caption": "a red circle",
        "constant_box": (0, 0, 0.3, 0.3),
    }
    doc = table_json(_results(seeds), list(SETTINGS), seeds, DIFFERENCES, chance, SETTINGS)
    for n in SETTINGS:
        for k in CONTRACT:
            cell = doc["settings"][n][k]
            assert {"mean", "sd", "seeds"} <= set(cell) and cell["seeds"] == 3
    assert set(doc["differences"]) == {"b-a", "b-c", "dynamic-uniform", "itc_regions-itc_alt"}
    for d in doc["differences"].values():
        for k in CONTRACT:
            assert {"mean", "se"} <= set(d[k])
    assert doc["differences"]["b-a"]["vqa_accuracy"]["mean"] == pytest.approx(0.05)
    assert doc["differences"]["b-a"]["vqa_accuracy"]["se"] == pytest.approx(0.0, abs=1e-12)
    assert doc["differences"]["itc_regions-itc_alt"]["cider"]["mean"] == pytest.approx(-0.05)
    # the same 0.05 on each of three questions: no spread over items either
    assert doc["differences"]["b-a"]["vqa_accuracy"]["se_items"] == pytest.approx(0.0, abs=1e-12)
    assert doc["differences"]["b-a"]["cider"]["se_items"] is None  # no per-item scores given
    assert set(doc["chance"]) >= set(CONTRACT) and set(doc["min_detectable"]) >= set(CONTRACT)
    # a made-up 0.5 clears 0.1 + 0.10 and 5 x 0.1 and 2 x 0.1
    assert all(all(v.values()) for v in doc["clears_baseline"].values())
    json.dumps(doc)  # plain JSON
    md = render(doc | {"meta": {"command": "x", "minutes": 1.0, "device": "cpu", "commit": "abc"}})
    assert "| b-a (b − a) |" in md and "b ahead" in md and "Every setting clears its baseline" in md


def test_bootstrap_over_items():
    from jade.app.paper_stats import bootstrap_items

    rng = np.random.default_rng(1)
    x = {s: list(rng.integers(0, 2, 2000)) for s in range(3)}
    y = {s: list(rng.integers(0, 2, 2000)) for s in range(3)}
    se = bootstrap_items(x, y)
    # independent 0/1 items: var of the seed-mean difference per item = 2 * 0.25 / 3; se = sqrt(that / 2000)
    assert se == pytest.approx(math.sqrt(2 * 0.25 / 3 / 2000), rel=0.15)


def test_overlap_checks_tars_and_files(tmp_path):
    write_world(
        tmp_path / "w",
        WorldConfig(
            vg_images=3, gqa_images=3, vqa_train_images=3, vqa_val_images=2, cc3m_images=10, cc3m_shards=1
        ),
    )
    write_benchmarks(
        tmp_path / "b",
        BenchConfig(test_images=4, caption_train_images=2, region_train_images=2, region_test_images=2),
    )
    found = overlap(tmp_path / "b", tmp_path / "w")
    assert found["identical"] == 0 and found["benchmark_images"] == 10
    assert found["world_images"] >= 3 + 3 + 5 + 9  # the CC3M-like images inside the tar count too
    assert overlap(tmp_path / "w", tmp_path / "w")["identical"] == found["world_images"]


@pytest.mark.slow
def test_quick_table_end_to_end(tmp_path, monkeypatch):
    from jade.app.paper_table import BUDGETS, main
    from tests.app.paper_fixture import make_paper_run

    run = make_paper_run(tmp_path / "run")
    assert main([str(run), "--quick", "--seeds", "0,1", "--settings", "a,b", "--workers", "2"]) == 0
    doc = json.loads((run / "paper_table-quick.json").read_text())
    assert doc["settings"]["a"]["vqa_accuracy"]["seeds"] == 2 and "b-a" in doc["differences"]
    assert doc["meta"]["benchmark_overlap"]["identical"] == 0
    # a rerun reads the finished runs back instead of training again
    before = (run / "paper_table-quick" / "a" / "seed0" / "metrics.json").stat().st_mtime
    assert main([str(run), "--quick", "--seeds", "0,1", "--settings", "a,b"]) == 0
    assert (run / "paper_table-quick" / "a" / "seed0" / "metrics.json").stat().st_mtime == before
    # a new evaluation budget re-evaluates the finished checkpoints; it never pretrains them again
    weights = run / "paper_table-quick" / "a" / "seed0" / "checkpoint" / "model.safetensors"
    trained_at = weights.stat().st_mtime
    monkeypatch.setitem(BUDGETS["quick"], "vqa_steps", BUDGETS["quick"]["vqa_steps"] + 1)
    assert main([str(run), "--quick", "--seeds", "0", "--settings", "a"]) == 0
    m = json.loads((run / "paper_table-quick" / "a" / "seed0" / "metrics.json").read_text())
    assert m["config"]["vqa_steps"] == BUDGETS["quick"]["vqa_steps"] and m["pretrain_seconds"] is None
    assert weights.stat().st_mtime == trained_at


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_runs_end_when_the_table_is_killed(tmp_path):
    """A table killed mid-run leaves no run process training on its own (they die with it)."""
    script = tmp_path / "table.py"
    script.write_text(
        "import os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from multiprocessing import get_context\n"
        "from jade.app.paper_table import die_with_parent\n"
        "if __name__ == '__main__':\n"
        "    pool = ProcessPoolExecutor(1, mp_context=get_context('spawn'), initializer=die_with_parent,\n"
        "                               initargs=(os.getpid(),))\n"
        "    print(pool.submit(os.getpid).result(), flush=True)\n"
        "    pool.submit(time.sleep, 600)\n"
        "    time.sleep(600)\n"
    )
    root = str(Path(__file__).resolve().parents[2])  # this checkout's jade, whatever the venv points at
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    table = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=env)
    child = int(table.stdout.readline())
    os.kill(table.pid, signal.SIGKILL)
    table.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        if Path(f"/proc/{child}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return  # exited, not yet reaped
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the run's process outlived the table")
