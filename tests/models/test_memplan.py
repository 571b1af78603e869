"""The memory plan's arithmetic (models.memplan): the per-layer activation formulas against what the real
transformers layers save for backward (counted with saved_tensors_hooks, in fp32 and under bf16 autocast), the
parameter counts of PaliGemma-3B-224 on the meta device, and how the options move each term."""

import dataclasses

import pytest
import torch
from transformers import AutoModelForImageTextToText, PaliGemmaConfig

from jade.models import memplan
from jade.models.specs import LoRA


def _config(vl: int, tl: int, kv: int = 1) -> PaliGemmaConfig:
    return PaliGemmaConfig(
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=64,
            intermediate_size=96,
            num_hidden_layers=vl,
            num_attention_heads=4,
            image_size=32,
            patch_size=4,
        ),
        text_config=dict(
            model_type="gemma",
            hidden_size=80,
            intermediate_size=112,
            num_hidden_layers=tl,
            num_attention_heads=4,
            num_key_value_heads=kv,
            head_dim=24,
            vocab_size=500,
        ),
        image_token_index=3,
        vocab_size=500,
        projection_dim=80,
        hidden_size=80,
        pad_token_id=0,
    )


B, IMAGE, TEXT = 2, 64, 10


def _saved_bytes(config, bf16: bool) -> int:
    """Bytes of the distinct non-parameter tensors the forward pass saves for backward."""
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config).train()
    ids = torch.randint(5, 500, (B, IMAGE + TEXT))
    ids[:, :IMAGE] = 3
    types = torch.ones_like(ids)
    types[:, : IMAGE + 4] = 0
    params = {p.data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        if t.data_ptr() not in params and t.numel():
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            model(input_ids=ids, pixel_values=torch.randn(B, 3, 32, 32), token_type_ids=types)
    return sum(seen.values())


@pytest.mark.parametrize("bf16", [False, True])
def test_layer_formulas_match_what_the_layers_save(bf16):
    """One more layer adds what the formula says (bf16: minus autocast's bf16 copies of that layer's weights,
    which the plan counts apart)."""
    base = _saved_bytes(_config(1, 1), bf16)

    def layer_casts(cfg, tower):
        if not bf16:
            return 0
        model = AutoModelForImageTextToText.from_config(cfg)
        layer = (
            model.model.vision_tower.encoder.layers[0]
            if tower == "v"
            else model.model.language_model.layers[0]
        )
        return 2 * sum(
            p.numel()
            for m in layer.modules()
            if isinstance(m, torch.nn.Linear)
            for p in m.parameters(recurse=False)
        )

    cfg = _config(2, 1)
    vision = _saved_bytes(cfg, bf16) - base - layer_casts(cfg, "v")
    want = memplan.vision_layer_bytes(cfg.vision_config, bf16) * B * IMAGE
    assert vision == pytest.approx(want, rel=0.02)
    cfg = _config(1, 2)
    text = _saved_bytes(cfg, bf16) - base - layer_casts(cfg, "t")
    want = memplan.text_layer_bytes(cfg.text_config, IMAGE + TEXT, bf16) * B * (IMAGE + TEXT)
    assert text == pytest.approx(want, rel=0.02)


@pytest.fixture(scope="module")
def paligemma():
    config = memplan.paligemma_3b_224()
    return config, memplan.meta_model(config)


def test_paligemma_3b_counts_on_the_meta_device(paligemma):
    config, model = paligemma
    assert all(p.is_meta for p in model.parameters())
    c = memplan.counts(model)
    assert c.params == c.trainable == 2_923_466_480
    vision = sum(p.numel() for p in model.model.vision_tower.parameters())
    embed = model.model.language_model.embed_tokens.weight.numel()
    assert embed == 257216 * 2048 and c.head == embed  # the LM head is the tied embedding
    frozen = memplan.counts(model, ("vision_tower", "multi_modal_projector"))
    projector = sum(p.numel() for p in model.model.multi_modal_projector.parameters())
    assert frozen.trainable == c.params - vision - projector and not frozen.vision_trains
    lora = memplan.counts(model, ("vision_tower",), LoRA(r=16, targets=["q_proj", "v_proj"]))
    # q: 2048 -> 8 x 256, v: 2048 -> 256, in 18 layers: r x (in + out) each
    assert lora.trainable == 18 * 16 * ((2048 + 2048) + (2048 + 256))


def test_options_move_the_terms_they_should(paligemma):
    config, model = paligemma
    w = memplan.Workload(micro_batch=32, batch_size=32, text_tokens=40, target_tokens=25)
    off = memplan.Settings()
    c = memplan.counts(model)
    base = memplan.plan(config, w, off, c)
    # 4 + 4 + 8 bytes per parameter: weights, gradients, AdamW's two moments: 43.6 GiB before any activation
    assert (base.weights + base.grads + base.optimizer) / memplan.GIB == pytest.approx(43.56, abs=0.01)
    ckpt = memplan.plan(config, w, dataclasses.replace(off, gradient_checkpointing=True), c)
    assert ckpt.activations < base.activations / 5 and ckpt.weights == base.weights
    micro = memplan.plan(config, dataclasses.replace(w, micro_batch=8), off, c)
    assert micro.activations == pytest.approx(base.activations / 4, rel=0.01)
    frozen = memplan.counts(model, ("vision_tower",))
    bf16 = memplan.plan(
        config, w, dataclasses.replace(off, precision="bf16", freeze=("vision_tower",)), frozen
    )
    assert bf16.weights == pytest.approx(4 * frozen.trainable + 2 * (c.params - frozen.trainable))
    fsdp = memplan.plan(config, w, dataclasses.replace(off, strategy="fsdp", workers=4), c)
    assert fsdp.optimizer == pytest.approx(base.optimizer / 4)
    ddp = memplan.plan(config, w, dataclasses.replace(off, workers=4), c)
    assert ddp.grads == 2 * base.grads and ddp.optimizer == base.optimizer  # replicated, plus DDP's buckets
    assert memplan.plan(config, w, off, c, 80 * memplan.GIB).fits is False
    assert memplan.plan(config, w, off, c, 400 * memplan.GIB).fits is True
