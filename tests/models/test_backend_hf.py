"""Sampling semantics with a real (tiny, untrained) PaliGemma: top-K samples vary, greedy is deterministic,
and a request's samples do not depend on what it is batched with."""

import pytest
from PIL import Image

from jade.models import factory
from jade.models.backends.base import Request
from jade.models.backends.hf import HFBackend
from jade.models.specs import Architecture

ARCH = Architecture(
    image_size=32,
    patch_size=8,
    vision_hidden=32,
    vision_layers=1,
    text_hidden=64,
    text_layers=1,
    head_dim=32,
    vocab_size=300,
)
TEXTS = [
    "dense caption",
    "question yes/no",
    "answer en is there a red circle?",
    "yes",
    "no",
    "a red circle",
    "what color is the square?",
    "blue",
    "how many circles are there?",
    "2",
] * 20


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


# -- no wasted work: the prefix-sharing decoder against plain `transformers.generate` ----------------------


@pytest.fixture(scope="module")
def plain(backend):
    return HFBackend(backend.model, backend.processor, batch_size=4, fast=False)


def test_fast_path_is_used_and_prompt_ids_match_the_processor(backend):
    assert backend.fast
    for prompt in ("dense caption", "answer en what color is the  square?", "question yes/no"):
        ids = backend._prompt_ids([prompt])[prompt]
        ref = backend.processor(text=[f"<image>{prompt}"], images=[IMAGES[0]], return_tensors="pt")
        assert list(ids) == ref["input_ids"][0].tolist()


def test_greedy_equals_plain_generate(backend, plain):
    reqs = [Request(i % 3, p, max_new_tokens=5) for i, p in enumerate(TEXTS[:9])]
    fast = backend.generate(IMAGES, reqs)
    ref = plain.generate(IMAGES, reqs)
    assert [c[0].text for c in fast] == [c[0].text for c in ref]
    assert [c[0].score for c in fast] == pytest.approx([c[0].score for c in ref], rel=1e-4)


def test_each_image_is_encoded_once_and_samples_share_their_prefill(backend):
    prepared = backend.prepare(IMAGES)
    rows, tokens = backend.vision_rows, backend.prefill_tokens
    sampled = [Request(i, "question yes/no", 4, n=5, greedy=False, top_k=20, seed=i) for i in range(3)]
    backend.generate(prepared, sampled)
    backend.generate(prepared, [Request(i, "answer en is it red?", 4) for i in range(3)])
    assert backend.vision_rows == rows  # the features were reused: no encoder pass in generate
    assert rows >= len(IMAGES)
    prompt_len = len(backend._prompt_ids(["question yes/no"])["question yes/no"])
    answer_len = len(backend._prompt_ids(["answer en is it red?"])["answer en is it red?"])
    assert backend.prefill_tokens - tokens == 3 * prompt_len + 3 * answer_len  # not 5x per sampled prompt


def test_samples_do_not_depend_on_batch_size(backend):
    req = Request(2, "dense caption", 6, n=7, greedy=False, top_k=30, seed=99)
    small = HFBackend(backend.model, backend.processor, batch_size=2)
    assert [c.text for c in small.generate(IMAGES, [req])[0]] == [
        c.text for c in backend.generate(IMAGES, [req])[0]
    ]


def test_top_1_sampling_is_greedy(backend):
    greedy = backend.generate(IMAGES, [Request(1, "question number", 5)])[0][0].text
    top1 = backend.generate(IMAGES, [Request(1, "question number", 5, n=3, greedy=False, top_k=1, seed=5)])[0]
    assert [c.text for c in top1] == [greedy] * 3
