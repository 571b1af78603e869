"""Decoder growth between base stages (models/pretrain/grow.py): a later stage with more decoder layers starts
as exactly the model the stage before left, then trains its new layers."""

import dataclasses

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_model

from jade.app.base import load_recipe, make_base, stage_configs
from jade.app.world_source import probe_data
from jade.models.pretrain.config import PretrainConfig
from jade.models.pretrain.grow import layer_sources, load_grown
from jade.models.pretrain.loop import _processor, build_model
from jade.models.train import example_batch
from jade.pipeline.executor import LocalExecutor
from tests.models.test_pretrain_relate import RECIPE


def test_copies_are_spread_and_follow_the_layer_they_copy():
    assert layer_sources(3, 3) == [(0, False), (1, False), (2, False)]
    assert layer_sources(3, 5) == [(0, False), (1, False), (1, True), (2, False), (2, True)]
    assert layer_sources(2, 4) == [(0, False), (0, True), (1, False), (1, True)]
    assert layer_sources(1, 3) == [(0, False), (0, True), (0, True)]
    with pytest.raises(ValueError, match="cannot drop"):
        layer_sources(3, 2)


def _config(layers: int) -> PretrainConfig:
    cfg = PretrainConfig.from_dict({**RECIPE["pretrain"], "seed": 3})
    return dataclasses.replace(cfg, arch=dataclasses.replace(cfg.arch, text_layers=layers))


def test_grown_model_computes_what_the_smaller_one_did(tmp_path):
    small_cfg = _config(2)
    data = probe_data(0, 4, small_cfg.arch.image_size)
    processor = _processor(tmp_path / "processor", ["what color is the circle ? red blue"], small_cfg.arch)
    small = build_model(small_cfg, processor)
    with torch.no_grad():  # non-degenerate weights, so equal outputs mean something
        for p in small.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    save_model(small, str(tmp_path / "small.safetensors"))
    big = build_model(_config(4), processor)
    assert load_grown(big, tmp_path / "small.safetensors") == 2
    assert len(big.lm.model.language_model.layers) == 4
    batch = example_batch(
        processor, data.images, ["answer en what color is the circle ?"] * 4, ["red"] * 4, "cpu", "image"
    )
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    small.eval(), big.eval()
    with torch.no_grad():
        a, b = small.lm(**inputs).logits, big.lm(**inputs).logits
    assert torch.allclose(a, b, atol=1e-5) and a.abs().max() > 1e-3
    # the added layers are copies whose output projections start at zero; the others are unchanged
    layers = big.lm.model.language_model.layers
    assert (layers[1].self_attn.o_proj.weight == 0).all() and (layers[3].mlp.down_proj.weight == 0).all()
    assert torch.equal(
        layers[2].self_attn.q_proj.weight, small.lm.model.language_model.layers[1].self_attn.q_proj.weight
    )
    # growing is the only mismatch tolerated
    other = build_model(
        dataclasses.replace(_config(4), arch=dataclasses.replace(_config(4).arch, text_hidden=96)), processor
    )
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_grown(other, tmp_path / "small.safetensors")


def test_a_stage_can_grow_the_decoder(tmp_path):
    recipe = {
        **RECIPE,
        "stages": [{"steps": 2, "arch": {"text_layers": 3}, "tasks": ["objects", "vqa", "query"]}],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    raw, cfg = load_recipe(path)
    first, second = stage_configs(raw, cfg)
    assert first.arch.text_layers == 1 and second.arch.text_layers == 3
    assert second.arch.text_hidden == first.arch.text_hidden  # arch merges key by key
    assert second.tasks == ["objects", "vqa", "query"]
    meta = make_base(LocalExecutor(), path, work=tmp_path / "work", out=tmp_path / "out")
    assert meta["architecture"]["text_layers"] == 3
    weights = load_file(tmp_path / "work" / "stage-2" / "checkpoint" / "model.safetensors")
    assert "lm.model.language_model.layers.2.mlp.down_proj.weight" in weights
    # trained away from identity
    assert weights["lm.model.language_model.layers.1.mlp.down_proj.weight"].abs().sum() > 0
