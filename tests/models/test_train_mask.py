"""PaliGemma's decoder layers are built with is_causal=False: only token_type_ids (the prefix-LM mask) stop a
position from seeing the target it is trained to predict. The training loop must always pass them."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from jade.models import factory
from jade.models.specs import Architecture, Training
from jade.models.train import TrainJob, train_loop

ARCH = Architecture(
    image_size=32,
    patch_size=16,
    vision_hidden=32,
    vision_layers=1,
    text_hidden=64,
    text_layers=1,
    vocab_size=300,
)


@pytest.fixture(scope="module")
def model_and_processor():
    processor = factory.build_processor(["answer en what color is it?", "red", "blue"] * 20, ARCH)
    return factory.build_model(ARCH, processor).eval(), processor


def _logits_before_target(model, processor, suffix: str, with_types: bool):
    batch = processor(
        text=["<image>answer en what color is it?"],
        images=[Image.new("RGB", (32, 32))],
        suffix=[suffix],
        return_tensors="pt",
        padding="longest",
    )
    batch.pop("labels")
    if not with_types:
        batch.pop("token_type_ids")
    with torch.no_grad():
        return model(**batch).logits[0, -3]  # the position that predicts the first target token


def test_prefix_mask_hides_the_target(model_and_processor):
    model, processor = model_and_processor
    a = _logits_before_target(model, processor, "red", with_types=True)
    b = _logits_before_target(model, processor, "blue", with_types=True)
    assert torch.allclose(a, b, atol=1e-5)  # the target is invisible to the position that predicts it
    a = _logits_before_target(model, processor, "red", with_types=False)
    b = _logits_before_target(model, processor, "blue", with_types=False)
    assert not torch.allclose(a, b, atol=1e-5)  # without the mask it leaks: what the guard is for


def test_train_loop_trains_and_saves(tmp_path, model_and_processor):
    _, processor = model_and_processor
    img = tmp_path / "a.jpg"
    Image.new("RGB", (32, 32), (255, 0, 0)).save(img)
    table = pa.table(
        {"image_path": [str(img)] * 8, "prefix": ["answer en what color is it?"] * 8, "suffix": ["red"] * 8}
    )
    pq.write_table(table, tmp_path / "ex.parquet")
    processor.save_pretrained(tmp_path / "proc")
    job = TrainJob(
        examples=str(tmp_path / "ex.parquet"),
        processor_dir=str(tmp_path / "proc"),
        arch=ARCH,
        seed=0,
        out_dir=str(tmp_path / "out"),
        threads=1,
        meta={"role": "t"},
        train=Training(steps=3, batch_size=4, lr=1e-3, weight_decay=0.0, warmup_steps=1),
    )
    metrics = train_loop(job)
    assert metrics["steps"] == 3 and (tmp_path / "out" / "model.safetensors").exists()
    assert factory.read_meta(tmp_path / "out")["train_metrics"]["steps"] == 3


def test_architecture_sets_the_key_value_heads():
    from dataclasses import replace

    processor = factory.build_processor(["answer en red"] * 20, ARCH)
    assert factory.build_model(ARCH, processor).config.text_config.num_key_value_heads == 1  # Gemma-2B's MQA
    mha = factory.build_model(replace(ARCH, kv_heads=4), processor)
    assert mha.config.text_config.num_key_value_heads == 4 == mha.config.text_config.num_attention_heads
    old = {
        k: v for k, v in ARCH.__dict__.items() if k != "kv_heads"
    }  # an architecture dict from before the field
    assert (
        factory.build_model(Architecture.from_dict(old), processor).config.text_config.num_key_value_heads
        == 1
    )


def test_target_only_loss_equals_the_model_loss(model_and_processor):
    from jade.models.train import example_batch, lm_loss

    model, processor = model_and_processor
    images = [Image.new("RGB", (32, 32), c) for c in ((200, 0, 0), (0, 0, 200), (0, 200, 0))]
    batch = example_batch(
        processor,
        images,
        ["answer en what color is it?", "answer en red?", "answer en x"],
        ["red", "blue circle", "no"],
        "cpu",
        "image",
    )
    with torch.no_grad():
        assert lm_loss(model, batch).item() == pytest.approx(model(**batch).loss.item(), rel=1e-5)
