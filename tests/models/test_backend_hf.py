"""Sampling semantics with a real (tiny, untrained) PaliGemma: top-K samples vary, greedy is deterministic,
and a request's samples do not depend on what it is batched with."""

import pytest
from PIL import Image

from jade.models import factory
from jade.models.backends.base import Request
from jade.models.backends.hf import HFBackend
from jade.pipeline.config import Architecture

ARCH = Architecture(image_size=32, patch_size=8, vision_hidden=32, vision_layers=1, text_hidden=64, text_layers=1,
                    head_dim=32, vocab_size=300)  # fmt: skip
TEXTS = ["dense caption", "question yes/no", "answer en is there a red circle?", "yes", "no", "a red circle",
         "what color is the square?", "blue", "how many circles are there?", "2"] * 20  # fmt: skip


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    processor = factory.build_processor(TEXTS, ARCH)
    model = factory.build_model(ARCH, processor, seed=0)
    path = tmp_path_factory.mktemp("ckpt")
    factory.save(model, processor, path, {"role": "test"})
    model, processor = factory.load(str(path))  # through the Auto classes, as the stages do
    return HFBackend(model, processor, batch_size=4)


IMAGES = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 0, 255), (0, 200, 0))]


def test_top_k_samples_vary_and_are_seeded(backend):
    req = Request(0, "question yes/no", max_new_tokens=6, n=6, greedy=False, top_k=50, seed=123)
    a = [c.text for c in backend.generate(IMAGES, [req])[0]]
    b = [c.text for c in backend.generate(IMAGES, [req])[0]]
    assert a == b  # same seed, same samples
    assert len(set(a)) > 1  # top-K sampling: samples differ from one another
    other = Request(1, "question number", max_new_tokens=6, n=3, greedy=False, top_k=50, seed=7)
    together = backend.generate(IMAGES, [other, req])
    assert [c.text for c in together[1]] == a  # independent of what else is in the call
    c = [
        c.text
        for c in backend.generate(
            IMAGES, [Request(0, "question yes/no", 6, n=6, greedy=False, top_k=50, seed=124)]
        )[0]
    ]
    assert c != a


def test_greedy_is_deterministic_and_batch_independent(backend):
    reqs = [Request(i % 3, f"answer en question {i}?", max_new_tokens=5) for i in range(7)]
    one_by_one = [backend.generate(IMAGES, [r])[0][0].text for r in reqs]
    batched = [c[0].text for c in backend.generate(IMAGES, reqs)]
    assert batched == one_by_one
    assert all(0.0 < c[0].score <= 1.0 for c in backend.generate(IMAGES, reqs[:2]))
