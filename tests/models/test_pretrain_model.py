"""The pretrainer's attention masks and task losses on a tiny model."""

import numpy as np
import pytest
import torch
from PIL import Image

from jade.models import factory
from jade.models.pretrain.base import PretrainData, TaskContext, Vocabulary, merged_lm_losses
from jade.models.pretrain.model import PretrainModel
from jade.models.pretrain.tasks import TASKS
from jade.models.specs import Architecture
from jade.models.train import example_batch

ARCH = Architecture(
    image_size=32,
    patch_size=16,
    vision_hidden=32,
    vision_layers=1,
    text_hidden=64,
    text_layers=1,
    head_dim=16,
    vocab_size=300,
)
TEXTS = ["a red circle on the left", "what colour is the square", "two blue squares", "yes", "2"] * 10


@pytest.fixture(scope="module")
def tiny():
    proc = factory.build_processor(TEXTS, ARCH)
    return PretrainModel(factory.build_model(ARCH, proc), embed_dim=16).eval(), proc


def _logits(model, batch):
    with torch.no_grad():
        return model.lm(**{k: v for k, v in batch.items() if k != "labels"}).logits


@pytest.mark.parametrize("mask", ["prefix", "image", "causal"])
def test_targets_never_leak_and_the_prefix_is_bidirectional_only_in_prefix_mode(tiny, mask):
    model, proc = tiny
    img = [Image.new("RGB", (32, 32), (200, 10, 10))]
    a, b = (
        example_batch(proc, img, ["what colour"], [s], "cpu", mask)
        for s in ("red circle left", "red circle on")
    )
    first = int((a["input_ids"] != b["input_ids"]).nonzero()[0, 1])
    assert torch.allclose(_logits(model, a)[:, :first], _logits(model, b)[:, :first], atol=1e-5)
    # image tokens see the prompt after them under prefix-LM, never under the image or causal rules
    c, d = (example_batch(proc, img, [p], ["red"], "cpu", mask) for p in ("what colour", "what circle"))
    same = torch.allclose(_logits(model, c)[:, :4], _logits(model, d)[:, :4], atol=1e-5)
    assert same == (mask != "prefix")


def test_every_task_gives_a_finite_loss_with_gradients(tiny):
    model, proc = tiny
    colours = [(200, 10, 10), (10, 200, 10), (10, 10, 200), (200, 200, 10)]
    data = PretrainData(
        keys=[str(i) for i in range(4)],
        images=[Image.new("RGB", (32, 32), c) for c in colours],
        captions=["a red circle", "a green square", "two blue squares", "a yellow one"],
        qa=[[{"question": "what colour is it", "answer": "red"}]] * 4,
        regions=[[{"bbox": [0.1, 0.1, 0.5, 0.6], "caption": "a circle"}]] * 4,
        objects=[
            [
                {
                    "bbox": (0.1, 0.1, 0.4, 0.4),
                    "color": c,
                    "shape": "circle",
                    "size": "small",
                    "position": "top left",
                }
            ]
            for c in ("red", "green", "blue", "yellow")
        ],
        # the world's words come with the data (a world of its own here, not the sample world's)
        vocab=Vocabulary(
            colors=("red", "green", "blue", "yellow"),
            shapes=("circle", "square"),
            sizes=("small", "large"),
            rows=("top", "bottom"),
            cols=("left", "right"),
            positions={f"{r} {c}": (r, c) for r in ("top", "bottom") for c in ("left", "right")},
            relations=("to the left of", "to the right of", "above", "below"),
        ),
    )
    # a second object in the last scene, so the tasks about pairs (relation) have examples
    data.objects[-1].append(
        {
            "bbox": (0.6, 0.1, 0.9, 0.4),
            "color": "red",
            "shape": "square",
            "size": "small",
            "position": "top right",
        }
    )
    model.train()
    for name, cls in TASKS.items():
        task = cls()
        pool = task.examples(data)
        assert pool, name
        ctx = TaskContext(model, proc, data, "prefix", "cpu", np.random.default_rng(0))
        loss = task.loss(ctx, pool[:4])
        assert torch.isfinite(loss), name
        loss.backward()
    assert model.itm_head.weight.grad is not None and model.img_proj.weight.grad is not None
    model.zero_grad()
    model.eval()  # no dropout: the merged pass must give each task's own loss
    lm = [(TASKS[n](), None) for n in ("caption", "vqa", "dense")]
    parts = [(t, t.examples(data)[:3]) for t, _ in lm]
    alone = {t.name: t.loss(TaskContext(model, proc, data, "prefix", "cpu", None), ex) for t, ex in parts[:1]}
    merged = merged_lm_losses(TaskContext(model, proc, data, "prefix", "cpu", None), parts[:1])
    assert merged["caption"].item() == pytest.approx(alone["caption"].item(), rel=1e-5)
    both = merged_lm_losses(TaskContext(model, proc, data, "prefix", "cpu", None), parts)
    assert set(both) == {"caption", "vqa", "dense"} and all(torch.isfinite(v) for v in both.values())
    # left padding to the longer examples moves positions: close to, not equal to, each task alone
    for t, ex in parts:
        own = t.loss(TaskContext(model, proc, data, "prefix", "cpu", None), ex).item()
        assert both[t.name].item() == pytest.approx(own, rel=0.2), t.name


def test_the_task_registry_matches_the_config_names():
    from jade.models.pretrain.config import TASKS as NAMES

    assert tuple(TASKS) == NAMES
