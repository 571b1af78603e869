"""`make bench`'s generate benchmark at smoke size: the real stage workers, the per-question loop and (marker
``vllm``) vLLM, on tiny models with random weights whose answers depend on the input, under every attention
rule; the report has the contract keys and the factory's greedy outputs equal `transformers.generate`'s."""

import json

import pytest

from bench import generate
from jade.models.specs import Architecture

# 2 decoder layers (1 cannot tell the rules apart), head_dim 32 (vLLM's CPU attention needs it)
TINY = Architecture(
    image_size=32,
    patch_size=8,
    vision_hidden=64,
    vision_layers=1,
    text_hidden=64,
    text_layers=2,
    head_dim=32,
    kv_heads=1,
    vocab_size=300,
)
pytestmark = pytest.mark.timeout(300)  # the module's fixture runs the whole benchmark (about 40 s here)
CONTRACT = (
    "images_per_s",
    "naive_images_per_s",
    "speedup_vs_naive",
    "vision_encoder_passes_per_image",
    "prefill_tokens_per_image",
    "image_prefills_per_image",
    "outputs_identical",
    "peak_rss_mb_1x",
    "peak_rss_mb_4x",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    rep = generate.run(out, images=4, threads=1, rounds=1, vllm=False, arch=TINY)
    rep["_out"] = out
    return rep


def test_report_has_the_contract_keys(report):
    for key in CONTRACT:
        assert key in report, key
    assert report["rule"] == "image" and set(report["by_rule"]) == {"prefix", "image", "causal"}
    assert set(report["image_prefills_per_image"]) == {"generator", "filter"}
    assert report["images_4x"] >= 3 * report["images_1x"] > 0
    assert report["peak_rss_mb_4x"] > 0 and report["peak_rss_mb_1x"] > 0
    assert report["vllm"] == {"status": "skipped", "reason": "--no-vllm"}
    assert json.loads((report["_out"] / "generate.json").read_text())["images"] == report["images"]


@pytest.mark.parametrize("rule", ["prefix", "image", "causal"])
def test_outputs_equal_transformers_generate_under_each_rule(report, rule):
    r = report["by_rule"][rule]
    assert r["outputs_identical"], r["output_differences"]
    # a comparison that can fail: the models answer, and differently for different images and questions
    assert r["questions_answered"] > 0 and r["answers_nonempty"] > 0 and r["filter_answers_nonempty"] > 0
    assert r["distinct_answers"] > 1


@pytest.mark.parametrize("rule", ["prefix", "image", "causal"])
def test_one_vision_pass_per_image_and_the_image_prefilled_once_where_the_rule_allows(report, rule):
    r = report["by_rule"][rule]
    assert r["vision_encoder_passes_per_image"] == {"generator": 1.0, "filter": 1.0}
    assert all(v > 1.0 for v in r["naive_vision_encoder_passes_per_image"].values())
    if rule == "prefix":  # the image's keys and values depend on the prompt: one image prefill per prompt
        assert all(v > 1.0 for v in r["image_prefills_per_image"].values())
    else:
        assert r["image_prefills_per_image"] == {"generator": 1.0, "filter": 1.0}
    # the n samples of a prompt share its prefill; under prefix the filter's one prefill per question is the
    # loop's, elsewhere the image is not prefilled again per question
    assert r["prefill_tokens_per_image"]["generator"] < r["naive_prefill_tokens_per_image"]["generator"]
    fil, naive_fil = r["prefill_tokens_per_image"]["filter"], r["naive_prefill_tokens_per_image"]["filter"]
    assert fil == naive_fil if rule == "prefix" else fil < naive_fil


def test_vllm_is_skipped_with_the_reason_when_its_environment_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("JADE_VLLM_PYTHON", str(tmp_path / "no-such-python"))
    got = generate.bench_vllm(tmp_path, tmp_path, {}, 1, {})
    assert got["status"] == "skipped" and "no-such-python" in got["reason"]


@pytest.mark.vllm
@pytest.mark.timeout(600)  # two vLLM engines start (about a minute each on 2 cores)
def test_vllm_beside_hf_on_the_causal_checkpoint(tmp_path):
    rep = generate.run(tmp_path, images=4, threads=1, rounds=1, rules=("causal",), arch=TINY)
    vl = rep["vllm"]
    assert vl["status"] == "ran" and vl["rule_computed"] == "causal", vl
    for rule in ("prefix", "image"):  # refused, with both rules named
        assert vl["by_rule"][rule]["status"] == "refused"
        assert repr(rule) in vl["by_rule"][rule]["error"] and "'causal'" in vl["by_rule"][rule]["error"]
    c = vl["by_rule"]["causal"]
    assert c["status"] == "ran" and c["images_per_s"] > 0, c
    assert c["greedy_answers_compared"]["generator"] > 0 and c["greedy_agreement"] == 1.0, c["differences"]
    assert c["prefill_tokens_per_image"]["generator"] > 0 and c["sequences_per_image"]["generator"] > 1
    # its caches emptied before each round: every image is new to vLLM's vision encoder, once per model
    assert c["vision_encoder_passes_per_image"] == {"generator": 1.0, "filter": 1.0}
