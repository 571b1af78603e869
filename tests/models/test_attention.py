"""The attention rules (models.attention), computed by the model exactly: under every rule the target never
leaks to the positions that predict it, and each block sees exactly what its rule allows — image tokens
see the prompt only under `prefix`, image tokens see each other under `prefix` and `image` (not under
`causal`), and the prompt sees the whole image under every rule. The hf engine then computes the
checkpoint's rule: greedy answers equal `transformers.generate` under that rule, on a model whose answers
depend on its input, and under `image`/`causal` each image is encoded and prefilled once."""

import pytest
import torch
from PIL import Image
from transformers.modeling_outputs import BaseModelOutputWithPooling

from jade.models import attention, factory
from jade.models.backends.base import Request
from jade.models.backends.hf import HFBackend
from jade.models.specs import Architecture
from jade.models.train import example_batch

ARCH = Architecture(
    image_size=32,
    patch_size=8,
    vision_hidden=64,
    vision_layers=1,
    text_hidden=64,
    text_layers=2,
    head_dim=32,
    vocab_size=300,
)
TEXTS = [
    "answer en is there a red circle?",
    "yes",
    "no",
    "a red circle",
    "what color is the square?",
    "blue",
    "how many circles are there?",
    "2",
    "dense caption",
    "question yes/no",
] * 20
IMAGES = [Image.new("RGB", (40, 40), c) for c in ((255, 0, 0), (0, 0, 255), (0, 200, 0), (250, 250, 0))]
N_IMG = (32 // 8) ** 2


@pytest.fixture(scope="module")
def model():
    """Two decoder layers with large random weights: answers depend on the image and the prompt (a 1-layer or
    small-weight model answers the same to everything, and then no comparison means anything)."""
    processor = factory.build_processor(TEXTS, ARCH)
    m = factory.build_model(ARCH, processor, seed=0).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g) * (1.0 if "embed" in name else 0.3))
    return m, processor


def _hidden(model, batch):
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return model.model(**inputs).last_hidden_state[0]


@pytest.mark.parametrize("rule", attention.RULES)
def test_each_block_sees_exactly_what_its_rule_allows(model, rule):
    m, proc = model
    base = example_batch(proc, IMAGES[:1], ["what color is the square?"], ["blue"], "cpu", rule)
    other_target = example_batch(proc, IMAGES[:1], ["what color is the square?"], ["no"], "cpu", rule)
    other_prompt = example_batch(proc, IMAGES[:1], ["how many circles are there?"], ["blue"], "cpu", rule)
    h, h_t, h_p = _hidden(m, base), _hidden(m, other_target), _hidden(m, other_prompt)
    labels = base["labels"][0]
    first_target = int((labels != -100).nonzero()[0])
    # no rule lets a position see the target it predicts (nor any later one)
    assert torch.allclose(h[:first_target], h_t[:first_target], atol=1e-5)
    # image tokens see the prompt after them only under prefix
    assert torch.allclose(h[:N_IMG], h_p[:N_IMG], atol=1e-5) == (rule != "prefix")
    # the prompt sees the image under every rule
    other_image = example_batch(proc, IMAGES[1:2], ["what color is the square?"], ["blue"], "cpu", rule)
    assert not torch.allclose(h[N_IMG:first_target], _hidden(m, other_image)[N_IMG:first_target], atol=1e-5)
    # in the decoder, image tokens see each other under prefix and image, not under causal: the same image
    # features except the last token's (the vision tower mixes patches itself, so set the features directly)
    with torch.no_grad():
        feats = m.model.get_image_features(base["pixel_values"]).pooler_output
        changed = feats.clone()
        changed[:, -1] += 1.0
        inputs = {k: v for k, v in base.items() if k not in ("labels", "pixel_values")}
        first = [
            m.model(
                **inputs, mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=f)}
            ).last_hidden_state[0, 0]
            for f in (feats, changed)
        ]
    assert torch.allclose(first[0], first[1], atol=1e-5) == (rule == "causal")


def test_a_checkpoint_without_a_record_is_prefix(tmp_path):
    assert attention.rule_of(tmp_path) == "prefix"
    (tmp_path / "jade_model.json").write_text('{"attention": "image"}')
    assert attention.rule_of(tmp_path) == "image"
    with pytest.raises(ValueError, match="not one of"):
        attention.check("bidirectional")


REQUESTS = [
    Request(i % 4, p, 6)
    for i, p in enumerate(
        [
            "answer en is there a red circle?",
            "dense caption",
            "answer en what color is the square?",
            "question yes/no",
            "answer en how many circles are there?",
        ]
        * 2
    )
]


@pytest.mark.parametrize("rule", attention.RULES)
def test_greedy_equals_transformers_generate_under_each_rule(model, rule):
    m, proc = model
    engine = HFBackend(m, proc, batch_size=4, attention=rule)
    prepared = engine.prepare(IMAGES)
    vision, prefills = engine.vision_rows, engine.image_prefills
    fast = [c[0].text for c in engine.generate(prepared, REQUESTS)]
    ref = []
    for r in REQUESTS:
        enc = example_batch(proc, [IMAGES[r.image]], [r.prompt], None, "cpu", rule)
        out = m.generate(**enc, max_new_tokens=r.max_new_tokens, do_sample=False)
        ref.append(
            proc.tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        )
    assert fast == ref
    assert len(set(ref)) >= 4  # the answers depend on the input: the comparison can fail
    assert vision == len(IMAGES)  # one vision pass per image, in prepare
    if rule != "prefix":  # the image's keys and values once per image, shared by every prompt
        assert prefills == len(IMAGES) and engine.image_prefills == prefills
    else:  # under prefix they depend on the prompt: one per (image, prompt)
        assert engine.image_prefills == len({(r.image, r.prompt) for r in REQUESTS})


def test_the_rules_answer_differently(model):
    m, proc = model
    answers = {
        rule: [c[0].text for c in HFBackend(m, proc, attention=rule).generate(IMAGES, REQUESTS)]
        for rule in attention.RULES
    }
    assert answers["prefix"] != answers["causal"] and answers["image"] != answers["causal"]


@pytest.mark.parametrize("rule", attention.RULES)
def test_prompts_of_different_lengths_in_one_batch_equal_transformers_generate(model, rule):
    """One decode batch of mixed prompt lengths (left-padded caches, masked pads, per-row positions), greedy
    and sampled rows together: greedy answers equal `transformers.generate` under the rule, and samples
    equal those of the request decoded alone (they do not depend on what they are batched with)."""
    m, proc = model
    engine = HFBackend(m, proc, batch_size=64, attention=rule)
    prepared = engine.prepare(IMAGES)
    lengths = {len(ids) for ids in engine._prompt_ids([r.prompt for r in REQUESTS]).values()}
    assert len(lengths) >= 3  # the batch really mixes prompt lengths
    assert len(engine._batches([_unit(engine, r) for r in REQUESTS])) == 1
    sampled = Request(2, "question yes/no", 6, n=3, greedy=False, top_k=20, seed=7)
    out = engine.generate(prepared, [*REQUESTS, sampled])
    ref = []
    for r in REQUESTS:
        enc = example_batch(proc, [IMAGES[r.image]], [r.prompt], None, "cpu", rule)
        gen = m.generate(**enc, max_new_tokens=r.max_new_tokens, do_sample=False)
        ref.append(
            proc.tokenizer.decode(gen[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        )
    assert [c[0].text for c in out[:-1]] == ref
    assert len(set(ref)) >= 4
    alone = engine.generate(prepared, [sampled])[0]
    assert [c.text for c in out[-1]] == [c.text for c in alone]
    assert [c.score for c in out[-1]] == pytest.approx([c.score for c in alone], rel=1e-5)


def test_greedy_requests_of_one_image_and_prompt_are_decoded_once(model):
    """Greedy requests that repeat an (image, prompt) with other token limits (the filter's check "How many
    red circles are there?" with 3 tokens beside the same question answered with 8) are decoded once, with the
    largest limit, and each answer is its own limit's prefix: equal to `transformers.generate` at that limit."""
    m, proc = model
    engine = HFBackend(m, proc, batch_size=64, attention="image")
    reqs = [
        Request(0, "answer en what color is the square?", 8),
        Request(0, "answer en what color is the square?", 2),
        Request(0, "answer en what color is the square?", 8, seed=5, top_k=3),  # no part of a greedy answer
        Request(1, "answer en what color is the square?", 3),
        Request(1, "answer en what color is the square?", 8),
        Request(2, "dense caption", 4),
    ]
    rows = []
    decode = engine._decode

    def counting(prepared, units, requests):
        rows.extend(row for u in units for row in u.rows)
        yield from decode(prepared, units, requests)

    engine._decode = counting
    out = [c[0] for c in engine.generate(IMAGES, reqs)]
    assert sorted(rows) == [(0, 0), (4, 0), (5, 0)]  # one row per (image, prompt), the longest limit's
    ref = []
    for r in reqs:
        enc = example_batch(proc, [IMAGES[r.image]], [r.prompt], None, "cpu", "image")
        gen = m.generate(**enc, max_new_tokens=r.max_new_tokens, do_sample=False)
        ref.append(
            proc.tokenizer.decode(gen[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        )
    assert [c.text for c in out] == ref
    assert ref[1] != ref[0] and ref[0].startswith(ref[1])  # the 2-token answer really is a shorter prefix
    assert ref[3] != ref[4] and ref[4].startswith(ref[3])
    alone = [engine.generate(IMAGES, [r])[0][0] for r in reqs]
    assert [c.score for c in out] == pytest.approx([c.score for c in alone], rel=1e-5)


def _unit(engine, r):
    from jade.models.backends.hf import Unit

    return Unit(r.image, engine._prompt_ids([r.prompt])[r.prompt], [(0, 0)])
