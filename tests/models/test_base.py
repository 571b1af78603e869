"""The shipped base (models/bases/sampleworld-tiny, made by `make base`): its weights match the fingerprint its
jade_model.json records, it loads through the Auto classes, and it answers colour/shape-binding questions about
scenes it never saw far above the answer prior, in seconds on a CPU."""

import random
from collections import Counter

import pytest

from jade.app.base import check_base
from jade.app.manifest import BASES_DIR
from jade.models import factory
from jade.models.greedy import greedy
from jade.models.tasks import answer_prompt
from jade.models.vqa_normalize import normalize_answer
from jade.sampleworld.language import sample_question_records
from jade.sampleworld.stream import draw

BASE = BASES_DIR / "sampleworld-tiny"
BINDING = ("query_color", "query_shape", "verify_color", "exist_cs")  # find an object by what it is


@pytest.fixture(scope="module")
def base():
    meta = check_base(BASE)  # raises when the weights are not the ones recorded
    model, processor = factory.load(str(BASE))
    return meta, model, processor


def test_the_base_records_what_it_is(base):
    meta, model, _ = base
    assert meta["role"] == "base" and meta["attention"] in ("prefix", "image", "causal")
    assert meta["examples_seen"] > 0 and meta["train_seconds"] > 0 and meta["probe"]["qa"] > 0
    assert (BASE / "README.md").read_text().count("| query_color |") == 1  # the card's probe table
    assert sum(p.numel() for p in model.parameters()) < 5_000_000  # a few MB


def test_the_base_binds_colour_and_shape(base):
    meta, model, processor = base
    items = []
    for k in range(40):  # held-out scenes of a stream of their own, 1 to 4 objects
        d = draw(12345, "test-base", k, 1, 4)
        qas = [q for q in sample_question_records(d.scene, random.Random(k), 12) if q.template in BINDING]
        items += [(d.image, q) for q in qas]
    answers = greedy(
        model,
        processor,
        [i for i, _ in items],
        [answer_prompt(q.question) for _, q in items],
        meta["attention"],
        4,
    )
    right = Counter(
        q.template
        for (_, q), a in zip(items, answers, strict=True)
        if normalize_answer(a) == normalize_answer(q.answer)
    )
    asked = Counter(q.template for _, q in items)
    prior = {
        t: Counter(q.answer for _, q in items if q.template == t).most_common(1)[0][1] / n
        for t, n in asked.items()
    }
    accuracy = {t: right[t] / n for t, n in asked.items()}
    assert sum(right.values()) / len(items) >= 0.8, accuracy
    for t in BINDING:
        assert accuracy[t] >= prior[t] + 0.25, (t, accuracy[t], prior[t])


def test_a_role_fine_tunes_from_the_base(tmp_path, base):
    """What the finetune stage does with `models.<role>.base`: load the base through the Auto classes, train
    under its rule, save a checkpoint that keeps the base's tokenizer and records the rule."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from safetensors.torch import load_file

    from jade.models.specs import Training
    from jade.models.train import TrainJob, train_loop

    meta, _, _ = base
    rows: dict[str, list] = {"image_path": [], "prefix": [], "suffix": []}
    for k in range(8):
        d = draw(54321, "test-finetune", k, 1, 3)
        d.image.save(tmp_path / f"{k}.png")
        for q in sample_question_records(d.scene, random.Random(k), 2):
            rows["image_path"].append(str(tmp_path / f"{k}.png"))
            rows["prefix"].append(answer_prompt(q.question))
            rows["suffix"].append(q.answer)
    pq.write_table(pa.table(rows), tmp_path / "examples.parquet")
    job = TrainJob(
        examples=str(tmp_path / "examples.parquet"),
        out_dir=str(tmp_path / "out"),
        arch=None,  # type: ignore[arg-type]
        train=Training(steps=3, batch_size=4, lr=3e-4, warmup_steps=1),
        attention=meta["attention"],
        base=str(BASE),
        threads=1,
        meta={"role": "filter"},
    )
    metrics = train_loop(job)
    assert metrics["steps"] == 3 and metrics["loss_ema"] == metrics["loss_ema"]  # trained, loss not NaN
    tuned = factory.read_meta(job.out_dir)
    assert tuned["attention"] == meta["attention"] and tuned["role"] == "filter"
    _, tuned_processor = factory.load(job.out_dir)
    assert tuned_processor.tokenizer.get_vocab() == base[2].tokenizer.get_vocab()  # the base's tokenizer
    before, after = load_file(BASE / "model.safetensors"), load_file(tmp_path / "out" / "model.safetensors")
    assert before.keys() == after.keys() and any((before[k] != after[k]).any() for k in before)
