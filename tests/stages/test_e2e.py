"""The factory end to end on a very small sample world, with real tiny models and real Ray."""

import json

import datasets
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jade.app.runner import run_manifest
from jade.models.vqa_normalize import answers_match
from jade.pipeline.executor import RayExecutor
from jade.pipeline.rundir import RunDir
from tests.tiny import TINY

CONTRACT = ["key", "image", "url", "caption", "width", "height", "qa", "regions", "provenance"]
pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]  # the module fixture runs the factory once


@pytest.fixture(scope="module")
def ray_executor():
    ex = RayExecutor(num_cpus=2)
    yield ex
    ex.shutdown()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, ray_executor):
    out = tmp_path_factory.mktemp("run") / "tiny"
    summaries = run_manifest("sample", str(out), TINY, executor=ray_executor)
    assert [k for k, s in summaries.items() if s.get("skipped")] == []
    return out


def _rows(path):
    return sorted(
        (r for f in sorted(path.glob("*.parquet")) for r in pq.read_table(f).to_pylist()),
        key=lambda r: json.dumps(r, default=str),
    )


def test_dataset_loads_both_ways_with_contract_columns(run_dir):
    ds = datasets.load_dataset(str(run_dir / "dataset"), split="train")
    ds2 = datasets.load_dataset("parquet", data_files=str(run_dir / "dataset/data/*.parquet"), split="train")
    stats = json.loads((run_dir / "stats.json").read_text())
    for d in (ds, ds2):
        assert list(d.features) == CONTRACT
        assert len(d) == stats["images_ok"]
        assert isinstance(d[0]["image"], Image.Image)
    assert len(set(ds["key"])) == len(ds)
    row = ds[0]
    assert row["width"] == row["image"].size[0] and row["height"] == row["image"].size[1]
    for r in row["regions"]:
        assert len(r["bbox"]) == 4 and all(0.0 <= v <= 1.0 for v in r["bbox"])
    assert set(row["provenance"]) == {
        "generator",
        "filter",
        "config",
        "seed",
        "source_shard",
        "source_key",
        "generator_attention",
        "filter_attention",
    }
    assert row["key"] == f"cc3m/{row['provenance']['source_key']}"  # namespaced by the source folder
    card = (run_dir / "dataset" / "README.md").read_text()
    assert card.startswith("---\n") and "dataset_info" in card and "qa_kept" in card


def test_counts_add_up(run_dir):
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["images_in"] == 16 and stats["images_failed"] >= 1  # the world's failed downloads
    assert stats["images_in"] == stats["images_ok"] + stats["images_failed"]
    assert stats["questions_generated"] == stats["qa_kept"] + stats["qa_rejected"] > 0
    assert stats["questions_generated"] == stats["images_ok"] * 5  # 2 + 1 + 2 samples per image
    rejected = (
        pq.read_table(sorted((run_dir / "rejected").glob("*.parquet"))).num_rows
        if stats["qa_rejected"]
        else 0
    )
    assert rejected == stats["qa_rejected"]
    failures = sum(pq.read_table(f).num_rows for f in (run_dir / "failures").glob("*.parquet"))
    assert failures == stats["images_failed"]
    assert sum(t["questions_generated"] for t in stats["by_type"].values()) == stats["questions_generated"]
    kept = sum(len(r["qa"]) for r in _rows(run_dir / "dataset" / "data"))
    assert kept == stats["qa_kept"]


def test_kept_agree_and_mismatches_disagree(run_dir):
    for r in _rows(run_dir / "dataset" / "data"):
        for qa in r["qa"]:
            assert answers_match(qa["answer"], qa["filter_answer"])
    for r in _rows(run_dir / "rejected"):
        if r["reason"] == "answer mismatch":
            assert not answers_match(r["answer"], r["filter_answer"] or "")
        assert r["reason"] in {
            "answer mismatch",
            "duplicate question",
            "empty question",
            "empty answer",
            "low filter score",
            "no such object",
            "not one object",
        }


def test_run_json_and_checkpoints(run_dir):
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["seed"] == 0 and "transformers" in meta["packages"] and meta["manifest"]["name"] == "sample"
    for role in ("generator", "filter"):
        ck = run_dir / "checkpoints" / role
        assert (ck / "model.safetensors").exists() and (ck / "config.json").exists()
        from transformers import AutoModelForImageTextToText, AutoProcessor

        AutoProcessor.from_pretrained(ck)
        AutoModelForImageTextToText.from_pretrained(ck)  # reloadable without the CLI


def test_rerun_is_cheap_and_exact_and_changes_rerun_downstream(run_dir, ray_executor):
    before = {p.name: p.read_bytes() for p in (run_dir / "dataset" / "data").glob("*.parquet")}
    summaries = run_manifest("sample", str(run_dir), TINY, executor=ray_executor)
    assert all(s.get("skipped") for s in summaries.values())
    after = {p.name: p.read_bytes() for p in (run_dir / "dataset" / "data").glob("*.parquet")}
    assert before == after
    # A filter setting re-runs filter and publish only; the generator's work is reused.
    gen_mtime = (RunDir(run_dir).work("generate") / "00000.parquet").stat().st_mtime
    summaries = run_manifest(
        "sample", str(run_dir), [*TINY, "filter.normalization=none"], executor=ray_executor
    )
    ran = [k for k, s in summaries.items() if not s.get("skipped")]
    # publish only where filter's output changed
    assert ran[0] == "filter" and set(ran) <= {"filter", "publish"}
    assert (RunDir(run_dir).work("generate") / "00000.parquet").stat().st_mtime == gen_mtime


def test_status_and_eval_commands(run_dir, capsys):
    from jade.app.cli import main

    assert main(["status", str(run_dir), "--shards"]) == 0
    out = capsys.readouterr().out
    assert "publish" in out and "done" in out and "00000:" in out
    assert main(["eval", str(run_dir)]) == 0
    report = json.loads((run_dir / "eval.json").read_text())
    for key in (
        "qa_precision_all",
        "qa_precision_kept",
        "qa_precision_rejected",
        "qa_unverifiable",
        "keep_rate",
        "kept_per_image",
        "region_precision",
        "distinct_question_ratio",
        "by_type",
    ):
        assert key in report
    assert 0.0 <= report["qa_unverifiable"] <= 1.0
    # The trained models answered true questions about the held-out val images, next to the answer prior.
    acc = report["model_accuracy"]
    assert set(acc) == {"answer_prior", "generator", "filter"}
    for role in acc.values():
        assert role["questions"] == acc["answer_prior"]["questions"] > 0
        assert 0.0 <= role["all"] <= 1.0 and set(role["by_type"]) <= {"yes/no", "number", "other"}
    assert "Model accuracy on true questions" in (run_dir / "eval.md").read_text()


def test_region_questions_with_the_real_generator(run_dir):
    """generate.condition: region on a real (tiny) generator: each region's prompt, with its location tokens and
    caption, is sampled per JADE type with its own seed; the pairs carry their region; same seed, same output."""
    from jade.models.backends import make_backend
    from jade.models.tasks import QUESTION_TYPES
    from jade.stages.generate import GenerateConfig, Generator

    gen = Generator.__new__(Generator)  # what `_region_questions` reads: the settings, the seed, the backend
    gen.g = GenerateConfig(condition="region", region_questions={"binary": 2, "what": 1})
    gen.seed = 0
    gen.backend = make_backend("hf", str(run_dir / "checkpoints/generator"))
    imgs = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    batch = [(f"k{i}", img, b"") for i, img in enumerate(imgs)]
    regions = [
        [{"bbox": [0.1, 0.1, 0.5, 0.5], "caption": "a red circle", "score": 0.9}],
        [
            {"bbox": [0.0, 0.5, 0.4, 1.0], "caption": "a blue square", "score": 0.8},
            {"bbox": [0.5, 0.0, 1.0, 0.6], "caption": "a small green triangle", "score": 0.7},
        ],
    ]

    def ask():
        questions = [[] for _ in batch]
        gen._region_questions("00000", batch, gen.backend.prepare(imgs), regions, questions)
        return questions

    first = ask()
    assert [len(q) for q in first] == [3, 6]
    for i, qs in enumerate(first):
        asked = {r["caption"]: r["bbox"] for r in regions[i]}
        for question, qtype, score, jtype, region in qs:
            assert isinstance(question, str) and qtype in QUESTION_TYPES and 0.0 < score <= 1.0
            assert jtype in ("binary", "what") and asked[region["caption"]] == region["bbox"]
    assert ask() == first
