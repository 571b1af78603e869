"""The downstream scorers and baselines: recall with five captions an image, the region task's IoU accuracy,
the chance of each metric, and the whole benchmark evaluation with a real tiny model."""

import json
import math

import pytest
import torch

from jade.models import factory
from jade.models.pretrain import chance, downstream
from jade.models.pretrain.benchmarks import load_captions, load_refs
from jade.models.pretrain.config import PretrainConfig
from jade.models.pretrain.evaluate import on_benchmarks
from jade.models.pretrain.loop import build_model
from jade.sampleworld.benchmarks import BenchConfig, write_benchmarks

TINY_ARCH = {
    "image_size": 32,
    "patch_size": 16,
    "vision_hidden": 32,
    "vision_layers": 1,
    "text_hidden": 64,
    "text_layers": 1,
    "head_dim": 16,
    "vocab_size": 300,
}


def test_recall_counts_any_of_an_images_captions():
    # 3 images, 2 captions each (texts 0,1 -> image 0; 2,3 -> 1; 4,5 -> 2)
    owner = torch.tensor([0, 0, 1, 1, 2, 2])
    sim = torch.tensor(
        [
            [0.1, 0.9, 0.0, 0.0, 0.0, 0.0],  # image 0: its second caption first: right at 1
            [0.0, 0.0, 0.1, 0.2, 0.9, 0.0],  # image 1: image 2's caption first, its own second
            [0.9, 0.5, 0.0, 0.0, 0.1, 0.3],  # image 2: image 0's two captions, then its own
        ]
    )
    i2t, t2i = downstream.recall_at(sim, owner, ks=(1, 2, 3))
    assert [i2t[k] for k in (1, 2, 3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    # text -> image at 1: text 0 -> image 2 (wrong), 1 -> 0, 2 -> 1, 3 -> 1, 4 -> 1 (wrong), 5 -> 2
    assert t2i[1] == pytest.approx(4 / 6) and t2i[3] == 1.0


def test_retrieval_chance():
    i2t, t2i = chance.retrieval_chance(1000, 5, 1)
    assert i2t == pytest.approx(1 / 1000) and t2i == pytest.approx(1 / 1000)
    i2t, t2i = chance.retrieval_chance(1000, 5, 5)
    assert i2t == pytest.approx(1 - math.comb(4995, 5) / math.comb(5000, 5)) and t2i == pytest.approx(0.005)
    assert chance.retrieval_chance(3, 1, 10) == (1.0, 1.0)


def test_constant_baselines():
    assert chance.constant_caption([["a b", "c"], ["c", "a b"], ["c"]]) == "c"
    box, acc = chance.constant_box_accuracy(
        [(0, 0, 0.3, 0.3), (0, 0, 0.31, 0.31), (0.6, 0.6, 0.9, 0.9)], [(0, 0, 0.3, 0.3), (0.6, 0.6, 0.9, 0.9)]
    )
    assert box[2] in (0.3, 0.31) and acc == 0.5
    _, score = chance.constant_caption_cider([["red circle"]], [["red circle"], ["blue square"]])
    assert score >= 0


def test_vqa_prior_per_question_type(tmp_path):
    def ann(qid, qtype, answer):
        return {
            "question_id": qid,
            "question_type": qtype,
            "multiple_choice_answer": answer,
            "answers": [{"answer": answer}] * 10,
        }

    train = [
        ann(1, "how many", "2"),
        ann(2, "how many", "2"),
        ann(3, "is there a", "no"),
        ann(4, "how many", "1"),
    ]
    val = [ann(10, "how many", "2"), ann(11, "is there a", "yes"), ann(12, "what", "red")]
    for name, anns in (("t.json", train), ("v.json", val)):
        (tmp_path / name).write_text(json.dumps({"annotations": anns}))
    # "2" right, "no" wrong, the unseen type gets the overall prior ("2") and is wrong
    assert chance.vqa_prior(tmp_path / "t.json", tmp_path / "v.json") == pytest.approx(1 / 3)
    assert chance.vqa_prior(tmp_path / "t.json", tmp_path / "v.json", limit=1) == 1.0


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "bench"
    write_benchmarks(
        out, BenchConfig(test_images=8, caption_train_images=6, region_train_images=6, region_test_images=4)
    )
    return out


def test_readers(bench):
    test = load_captions(bench, "captest", 32, limit=5)
    assert len(test) == 5 and all(len(r) == 5 for r in test.refs) and test.images[0].size == (32, 32)
    refs = load_refs(bench, "reftest", 32)
    assert len(refs) == len(refs.boxes) and all(0 <= v <= 1 for b in refs.boxes for v in b)
    assert all(b[2] > b[0] and b[3] > b[1] for b in refs.boxes)
    assert all(b in c and len(c) >= 2 for b, c in zip(refs.boxes, refs.candidates, strict=True))
    rate = chance.random_candidate(refs.candidates, refs.boxes)
    assert rate == pytest.approx(sum(1 / len(c) for c in refs.candidates) / len(refs))


def test_benchmark_evaluation_with_a_real_tiny_model(bench):
    cfg = PretrainConfig.from_dict(
        {
            "arch": TINY_ARCH,
            "embed_dim": 16,
            "benchmarks": str(bench),
            "downstream": {
                "retrieval_steps": 2,
                "caption_steps": 2,
                "region_steps": 2,
                "batch_size": 4,
                "caption_images": 3,
                "caption_max_tokens": 6,
                "region_refs": 3,
            },
        }
    )
    texts = [
        a["caption"]
        for a in json.loads((bench / "coco/annotations/captions_captrain.json").read_text())["annotations"]
    ]
    processor = factory.build_processor(texts + ["caption en", "detect"], cfg.arch)
    model = build_model(cfg, processor).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = on_benchmarks(model, processor, cfg)
    assert report["retrieval_images"] == 8 and report["retrieval_texts"] == 40
    # retrieval after the ITC fine-tune, the checkpoint's zero-shot numbers beside it
    assert report["retrieval_zs_images"] == 8 and 0.0 <= report["retrieval_zs_i2t_r1"] <= 1.0
    assert len(report["retrieval_i2t_hits"]) == 8 and len(report["retrieval_zs_t2i_hits"]) == 40
    for k in ("retrieval_i2t_r1", "retrieval_t2i_r10", "cider", "region_accuracy"):
        assert 0.0 <= report[k] <= (10.0 if k == "cider" else 1.0), k
    assert report["cider_images"] == 3 and report["region_refs"] == 3
    # the fine-tunes train copies: the checkpoint itself is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_itc_finetune_learns_the_train_pairs_and_leaves_the_model(bench):
    """A few ITC steps on the captioning train split lower the contrastive loss on those pairs; the
    checkpoint itself is untouched."""
    cfg = PretrainConfig.from_dict(
        {
            "arch": TINY_ARCH,
            "embed_dim": 16,
        }
    )
    train = load_captions(bench, "captrain", 32)
    texts = [r for refs in train.refs for r in refs]
    processor = factory.build_processor(texts, cfg.arch)
    torch.manual_seed(0)
    model = build_model(cfg, processor).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def itc_loss(m):
        with torch.no_grad():
            px = processor.image_processor(train.images, return_tensors="pt")["pixel_values"]
            img = m.image_embed(px)
            txt = m.text_embed(
                **downstream.text_batch(processor.tokenizer, [r[0] for r in train.refs], "cpu")
            )
            logits = m.logit_scale.exp() * img @ txt.T
            target = torch.arange(len(train))
            return float(
                (
                    torch.nn.functional.cross_entropy(logits, target)
                    + torch.nn.functional.cross_entropy(logits.T, target)
                )
                / 2
            )

    tuned = downstream.finetune_itc(model, processor, train, 30, len(train), 3e-3, 0, "cpu")
    assert itc_loss(tuned) < itc_loss(model) - 0.1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_evaluation_settings_are_not_the_checkpoints():
    """Changing only what the evaluation reads leaves the training settings equal (the paper table then
    re-evaluates a finished checkpoint instead of pretraining it again); anything else changes them."""
    from jade.models.pretrain.config import EVAL_FIELDS

    base = PretrainConfig.from_dict({"steps": 100, "vqa_steps": 10})
    new_eval = PretrainConfig.from_dict({"steps": 100, "vqa_steps": 20, "downstream": {"retrieval_steps": 5}})
    assert base.training_dict() == new_eval.training_dict()
    assert PretrainConfig.from_dict({"steps": 101}).training_dict() != base.training_dict()
    both = base.with_evaluation(new_eval)
    assert both.steps == 100 and both.vqa_steps == 20 and both.downstream.retrieval_steps == 5
    assert not set(EVAL_FIELDS) & set(base.training_dict())
