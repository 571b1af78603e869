"""`jade pretrain` end to end on a tiny dataset in the published layout: metrics, TensorBoard, plot, resume."""

import json
from pathlib import Path

import datasets
import pytest
from PIL import Image

from jade.app.cli import main

ARCH = "{image_size: 32, patch_size: 16, vision_hidden: 32, vision_layers: 1, text_hidden: 64, text_layers: 1, head_dim: 16, vocab_size: 300}"
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}
SHAPES = ["circle", "square"]


def make_published(run: Path, n: int = 16) -> None:
    rows = {
        "key": [],
        "image": [],
        "url": [],
        "caption": [],
        "width": [],
        "height": [],
        "qa": [],
        "regions": [],
    }
    for i in range(n):
        colour, shape = list(COLOURS)[i % 4], SHAPES[(i // 4) % 2]
        img = Image.new("RGB", (32, 32), (250, 250, 250))
        img.paste(COLOURS[colour], (4 + i % 3, 4, 20 + i % 3, 20))
        rows["key"].append(f"{i:09d}")
        rows["image"].append(img)
        rows["url"].append(None)
        rows["caption"].append(f"a {colour} {shape} picture {i}")
        rows["width"].append(32), rows["height"].append(32)
        rows["qa"].append(
            [
                {
                    "question": f"What colour is the {shape}?",
                    "answer": colour,
                    "type": "other",
                    "filter_answer": colour,
                    "score": 0.5,
                }
            ]
        )
        rows["regions"].append(
            [{"bbox": [0.1, 0.1, 0.6, 0.6], "caption": f"the {colour} {shape}", "score": 0.4}]
        )
    (run / "dataset" / "data").mkdir(parents=True)
    datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).to_parquet(
        str(run / "dataset" / "data" / "train-00000-00000-of-00001.parquet")
    )


def _pretrain(run: Path, steps: int, *extra: str) -> int:
    sets = [
        f"steps={steps}",
        "batch_size=24",
        f"arch={ARCH}",
        "checkpoint_every=10",
        "log_every=5",
        "eval_fraction=0.25",
        "embed_dim=16",
    ]
    return main(
        ["pretrain", str(run), "--executor", "local", *extra, *[a for s in sets for a in ("--set", s)]]
    )


def test_pretrain_writes_metrics_events_plot_and_resumes(tmp_path, caplog):
    run = tmp_path / "run"
    make_published(run)
    assert _pretrain(run, 20) == 0
    out = run / "pretrain"
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("vqa_accuracy", "retrieval_i2t_r1", "retrieval_t2i_r1", "cider", "steps", "task_shares"):
        assert key in metrics, key
    assert metrics["steps"] == 20 and metrics["vqa_accuracy"] is None  # no VQA v2 files beside this dataset
    assert set(metrics["task_shares"]) == {"itc", "itm", "caption", "completion", "vqa", "dense"}
    assert all(len(v) == 20 for v in metrics["task_shares"].values())
    assert all(min(v) >= 4 / 24 for v in metrics["task_shares"].values())  # the floor of 4 per task
    assert 0 <= metrics["retrieval_i2t_r1"] <= 1 and metrics["cider"] >= 0
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert (out / "task_shares.png").stat().st_size > 0
    assert (out / "checkpoint" / "model.safetensors").exists()
    # a longer budget on the same directory resumes at step 20 and continues the count
    caplog.clear()
    with caplog.at_level("INFO", logger="jade"):
        assert _pretrain(run, 30) == 0
    assert "resumed from step 20" in caplog.text
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 30 and [h["step"] for h in state["history"]] == list(range(1, 31))
    assert json.loads((out / "metrics.json").read_text())["steps"] == 30


def test_pretrain_rejects_unknown_settings(tmp_path, capsys):
    assert main(["pretrain", str(tmp_path), "--set", "mixing=random"]) == 2
    assert "mixing" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.ray
def test_pretrain_through_ray_train(tmp_path):
    run = tmp_path / "run"
    make_published(run)
    assert (
        main(["pretrain", str(run), "--set", "steps=6", "--set", f"arch={ARCH}", "--set", "batch_size=24"])
        == 0
    )
    assert json.loads((run / "pretrain" / "metrics.json").read_text())["steps"] == 6


def test_pretrain_with_gradient_accumulation_causal_mask_and_each_mixing(tmp_path):
    run = tmp_path / "run"
    make_published(run)
    assert _pretrain(run, 3, "--fresh", "--set", "grad_accum=2", "--set", "attention=causal") == 0
    assert json.loads((run / "pretrain" / "metrics.json").read_text())["steps"] == 3
    for mixing in ("uniform", "proportional", "round_robin"):
        assert _pretrain(run, 2, "--fresh", "--set", f"mixing={mixing}") == 0
        shares = json.loads((run / "pretrain" / "metrics.json").read_text())["task_shares"]
        assert all(len(v) == 2 for v in shares.values())


@pytest.mark.slow
@pytest.mark.ray
def test_pretrain_with_two_ray_train_workers(tmp_path):
    """Two workers on one machine (fractional CPUs): gradients and task losses are averaged across them."""
    run = tmp_path / "run"
    make_published(run)
    argv = [
        "pretrain",
        str(run),
        "--workers",
        "2",
        "--num-cpus",
        "0.5",
        "--set",
        "steps=4",
        "--set",
        f"arch={ARCH}",
        "--set",
        "batch_size=24",
        "--set",
        "embed_dim=16",
    ]
    assert main(argv) == 0
    metrics = json.loads((run / "pretrain" / "metrics.json").read_text())
    assert metrics["steps"] == 4 and all(len(v) == 4 for v in metrics["task_shares"].values())
