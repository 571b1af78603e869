"""Fine-tuning resumes after a failure: a run killed after its last resume checkpoint, run again, continues
from that step and ends with exactly the weights of an uninterrupted run."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from safetensors.torch import load_file

import jade.models.train as train
from jade.models import factory
from jade.models.specs import Training
from tests.models.test_train_mask import ARCH


class Crash(RuntimeError):
    pass


def _config(tmp_path, name: str, processor_dir: str, examples: str, fp: str = "fp1") -> train.TrainJob:
    return train.TrainJob(
        examples=examples,
        processor_dir=processor_dir,
        arch=ARCH,
        seed=0,
        out_dir=str(tmp_path / name / "out"),
        resume_dir=str(tmp_path / name / "resume"),
        threads=1,
        checkpoint_every=3,
        meta={"role": "t", "fingerprint": fp},
        train=Training(steps=8, batch_size=4, lr=1e-3, weight_decay=0.01, warmup_steps=2),
    )


@pytest.fixture
def data(tmp_path):
    rows = {"image_path": [], "prefix": [], "suffix": []}
    for i, (colour, rgb) in enumerate(
        [("red", (255, 0, 0)), ("blue", (0, 0, 255)), ("green", (0, 160, 0))] * 4
    ):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (32, 32), rgb).save(path)
        rows["image_path"].append(str(path)), rows["prefix"].append("answer en what color is it?")
        rows["suffix"].append(colour)
    pq.write_table(pa.table(rows), tmp_path / "ex.parquet")
    processor = factory.build_processor(["answer en what color is it?", "red", "blue", "green"] * 20, ARCH)
    processor.save_pretrained(tmp_path / "proc")
    return str(tmp_path / "proc"), str(tmp_path / "ex.parquet")


def test_killed_training_resumes_to_the_uninterrupted_weights(tmp_path, data, monkeypatch, caplog):
    straight = _config(tmp_path, "straight", *data)
    train.train_loop(straight)
    weights = load_file(f"{straight.out_dir}/model.safetensors")

    cfg = _config(tmp_path, "crashed", *data)
    real_lr = train.lr_at

    def crash_at_7(step, *args):
        if step == 7:  # after the checkpoint at step 6
            raise Crash("killed")
        return real_lr(step, *args)

    monkeypatch.setattr(train, "lr_at", crash_at_7)
    with pytest.raises(Crash):
        train.train_loop(cfg)
    monkeypatch.setattr(train, "lr_at", real_lr)
    with caplog.at_level("INFO", logger="jade"):
        metrics = train.train_loop(cfg)
    assert "resumed from step 6/8" in caplog.text
    assert metrics["steps"] == 8
    resumed = load_file(f"{cfg.out_dir}/model.safetensors")
    assert resumed.keys() == weights.keys()
    assert all((resumed[k] == weights[k]).all() for k in weights)  # exactly the uninterrupted run


def test_a_checkpoint_of_other_settings_is_not_used(tmp_path, data, monkeypatch, caplog):
    cfg = _config(tmp_path, "run", *data)
    real_lr = train.lr_at
    monkeypatch.setattr(
        train, "lr_at", lambda step, *a: (_ for _ in ()).throw(Crash()) if step == 4 else real_lr(step, *a)
    )
    with pytest.raises(Crash):
        train.train_loop(cfg)
    monkeypatch.setattr(train, "lr_at", real_lr)
    cfg = _config(tmp_path, "run", *data, fp="fp2")  # the settings changed
    with caplog.at_level("INFO", logger="jade"):
        train.train_loop(cfg)
    assert "does not match this run; starting over" in caplog.text and "resumed" not in caplog.text
    train.ResumeState(cfg, 0, 1).clear()
    assert not (tmp_path / "run" / "resume").exists() and not list(
        (tmp_path / "run").glob("resume.rank*.json")
    )
