"""`make bench`'s generate benchmark, at smoke size with tiny untrained models: it runs the real stage
workers and the per-question loop, and reports the contract keys with identical greedy outputs."""

import json

import pytest
import torch

from bench import generate
from jade.models import factory
from jade.pipeline.config import Architecture

ARCH = Architecture(image_size=32, patch_size=8, vision_hidden=32, vision_layers=1, text_hidden=64, text_layers=1,
                    head_dim=32, vocab_size=300)  # fmt: skip
CONTRACT = ("images_per_s", "naive_images_per_s", "speedup_vs_naive", "vision_encoder_passes_per_image",
            "prefill_tokens_per_image", "outputs_identical", "peak_rss_mb_1x", "peak_rss_mb_4x")  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    texts = ["dense caption", "question yes/no", "question number", "question other", "answer en is it red?",
             "yes", "no", "2", "red", "a red circle", "what color is the square?"] * 20  # fmt: skip
    for seed, role in enumerate(("generator", "filter")):
        processor = factory.build_processor(texts, ARCH)
        model = factory.build_model(ARCH, processor, seed=seed)
        with torch.no_grad():  # untrained models favour special tokens (empty text): silence them
            first_loc = processor.tokenizer.convert_tokens_to_ids("<loc0000>")
            model.get_input_embeddings().weight[first_loc:] = 0
            blank = [*processor.tokenizer.all_special_ids, processor.tokenizer.convert_tokens_to_ids("\n")]
            model.get_input_embeddings().weight[blank] = 0
        factory.save(model, processor, root / role, {"role": role})
    return root


def test_bench_generate_smoke(tmp_path, models):
    report = generate.run(tmp_path, images=4, models=str(models), threads=1, rounds=1)
    for key in CONTRACT:
        assert key in report, key
    assert report["outputs_identical"], report["output_differences"]
    assert report["questions_answered"] > 0
    assert report["answers_nonempty"] > 0 and report["filter_answers_nonempty"] > 0
    assert report["vision_encoder_passes_per_image"] == 1.0
    assert report["naive_vision_encoder_passes_per_image"] > 1.0
    assert report["prefill_tokens_per_image"] < report["naive_prefill_tokens_per_image"]
    assert report["images_4x"] >= 3 * report["images_1x"]
    assert json.loads((tmp_path / "generate.json").read_text())["images"] == report["images"]
