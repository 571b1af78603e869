"""The pixel memo gives the image processor's exact output, row for row, forgets images that are gone, and
leaves what it does not handle to the wrapped processor."""

import gc

import numpy as np
import torch
from PIL import Image

from jade.models import factory
from jade.models.pixel_memo import PixelMemo, memo_pixels
from jade.models.specs import Architecture
from jade.models.train import example_batch

ARCH = Architecture(
    image_size=32, patch_size=8, vision_hidden=32, vision_layers=1, text_hidden=64, text_layers=1, head_dim=32,
    vocab_size=300,
)  # fmt: skip
TEXTS = ["answer en what color is the square?", "blue", "red", "caption en", "a red circle"] * 20


def _images(n, size, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_memo_equals_the_image_processor_row_for_row_and_forgets_dead_images():
    plain = factory.build_processor(TEXTS, ARCH)
    memo = memo_pixels(factory.build_processor(TEXTS, ARCH))
    assert memo_pixels(memo).image_processor is memo.image_processor  # wrapped once
    imgs = _images(12, 40)  # not the model's size: the resize runs too
    rng = np.random.default_rng(1)
    for _ in range(4):  # repeats, duplicates within a batch, new and remembered images mixed
        pick = [imgs[i] for i in rng.choice(len(imgs), 8)]
        a = example_batch(plain, pick, ["answer en what color is the square?"] * 8, ["blue"] * 8, "cpu")
        b = example_batch(memo, pick, ["answer en what color is the square?"] * 8, ["blue"] * 8, "cpu")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
        direct = plain.image_processor(pick, return_tensors="pt")["pixel_values"]
        assert torch.equal(direct, memo.image_processor(pick, return_tensors="pt")["pixel_values"])
    rows = memo.image_processor._rows
    assert 0 < len(rows) <= 2 * len(imgs)
    del imgs, pick
    gc.collect()
    assert not rows  # held only while the image lives


def test_memo_passes_through_what_it_does_not_handle():
    plain = factory.build_processor(TEXTS, ARCH).image_processor
    memo = PixelMemo(factory.build_processor(TEXTS, ARCH).image_processor)
    arrays = [np.asarray(i) for i in _images(3, 32)]
    assert torch.equal(
        plain(arrays, return_tensors="pt")["pixel_values"], memo(arrays, return_tensors="pt")["pixel_values"]
    )
    as_numpy = memo(_images(2, 32), return_tensors="np")["pixel_values"]
    assert isinstance(as_numpy, np.ndarray) and not memo._rows
    assert memo.size == plain.size  # attributes are the wrapped processor's


def test_a_remembering_processor_saves_loads_and_copies_as_the_plain_one(tmp_path):
    import copy

    memo = memo_pixels(factory.build_processor(TEXTS, ARCH))
    memo.image_processor(_images(2, 32), return_tensors="pt")
    model = factory.build_model(ARCH, memo, seed=0)
    factory.save(model, memo, tmp_path / "m", {})
    assert isinstance(memo.image_processor, PixelMemo)  # saving leaves the caller's processor as it was
    loaded = factory.load_processor(tmp_path / "m")
    assert type(loaded.image_processor) is type(memo.image_processor._inner)
    assert loaded.image_processor.to_dict() == memo.image_processor._inner.to_dict()
    twin = copy.deepcopy(memo)
    assert isinstance(twin.image_processor, PixelMemo) and not twin.image_processor._rows
    import pickle

    again = pickle.loads(pickle.dumps(memo))
    assert isinstance(again.image_processor, PixelMemo) and not again.image_processor._rows
