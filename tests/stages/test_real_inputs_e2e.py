"""`jade run` end to end on inputs in the real formats written by this test (not by the sample world):
img2dataset webdataset and parquet shards, a generic webdataset, a Hugging Face Image parquet, VG / GQA / VQA
annotation files, with every bad case of issue 3. One output row per usable image, one failures/ row per
unusable one, nothing lost or duplicated, stats.json adds up; a malformed annotation file stops the run."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pyarrow.parquet as pq
import pytest
import yaml

from jade.app.cli import main
from jade.app.runner import run_manifest
from jade.formats.errors import FormatError
from jade.pipeline.executor import LocalExecutor
from tests.stages import real_inputs as ri

pytestmark = pytest.mark.timeout(600)  # the module fixture runs the factory twice
ARCH = {
    "image_size": 32,
    "patch_size": 8,
    "vision_hidden": 32,
    "vision_layers": 1,
    "text_hidden": 64,
    "text_layers": 1,
    "vocab_size": 400,
}
TRAIN = {"steps": 3, "batch_size": 4, "warmup_steps": 1}


def _manifest(path, name: str, images: dict, sources: dict) -> str:
    manifest = {
        "name": name,
        "seed": 0,
        "sources": {"images": images, **sources},
        "models": {
            "generator": {"architecture": ARCH, "train": TRAIN},
            "filter": {"architecture": ARCH, "train": TRAIN},
        },
        "generate": {
            "captions": 1,
            "questions": {"yes/no": 1, "number": 0, "other": 1},
            "max_new_tokens": {"caption": 6, "question": 6, "answer": 3},
        },
        "resources": {"generate": {"batch_size": 8}, "filter": {"batch_size": 8}},
        "ingest": {
            "min_image_size": 1,
            "dedupe": False,
        },  # tiny, repeated cases: these checks have tests of their own
    }
    path.write_text(yaml.safe_dump(manifest))
    return str(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    for d in ("wds", "generic", "i2d_parquet", "hf"):
        (root / d).mkdir()
    truth_wds = (
        ri.img2dataset_webdataset(root / "wds", 0, seed=1)
        + ri.img2dataset_webdataset(root / "wds", 1, seed=2)
        + ri.img2dataset_truncated(root / "wds", 2)
        + ri.generic_webdataset(
            root / "generic" / "00000.tar", 3, ["rgb", "cmyk", "rgba", "corrupt", "nocaption", "zero"]
        )
        + ri.generic_webdataset(
            root / "generic" / "00001.tar", 4, ["rgb", "palette", "grey16", "bomb", "blankcaption"]
        )
    )
    # generic/00001.tar repeats the member names of generic/00000.tar: "images/rgb" is a duplicate key there
    truth_wds = [(k, e) for k, e in truth_wds]
    idx = [i for i, (k, _) in enumerate(truth_wds) if k == "images/rgb"][1]
    truth_wds[idx] = ("images/rgb", "duplicate key")
    truth_pq = (
        ri.img2dataset_parquet(root / "i2d_parquet", 0)
        + ri.img2dataset_parquet(root / "i2d_parquet", 1)
        + ri.hf_image_parquet(root / "hf" / "train-00000-of-00001.parquet")
    )
    ann = ri.annotations(root / "ann")
    return {"root": root, "wds": truth_wds, "parquet": truth_pq, **ann}


@pytest.fixture(scope="module")
def runs(inputs, tmp_path_factory):
    root, out = inputs["root"], tmp_path_factory.mktemp("runs")
    wds = {
        "format": "webdataset",
        "urls": [f"{root}/wds/{{00000..00002}}.tar", f"file://{root}/generic/*.tar"],
    }
    pqs = {"format": "parquet", "urls": [f"{root}/i2d_parquet", f"{root}/hf/train-*.parquet"]}
    result = {}
    for name, images in (("wds", wds), ("parquet", pqs)):
        manifest = _manifest(out / f"{name}.yaml", name, images, inputs["sources"])
        assert main(["run", manifest, "--out", str(out / name), "--executor", "local"]) == 0  # `jade run`
        result[name] = out / name
    return result


def _table(folder):
    files = sorted(folder.glob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def _source_key(key: str) -> str:
    """The key within its source: published keys are namespaced by the source folder ("wds/000000007")."""
    return key.split("/", 1)[1]


def _rows(run):
    return {r["provenance"]["source_key"]: r for r in _table(run / "dataset" / "data")}


@pytest.mark.parametrize("kind", ["wds", "parquet"])
def test_every_sample_accounted_for_once(inputs, runs, kind):
    truth, run = inputs[kind], runs[kind]
    rows, failures = _table(run / "dataset" / "data"), _table(run / "failures")
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), "a key is published twice"
    assert all(_source_key(r["key"]) == r["provenance"]["source_key"] for r in rows)
    assert sorted(r["provenance"]["source_key"] for r in rows) == sorted(k for k, e in truth if e == "ok")
    expected = sorted((k, e) for k, e in truth if e != "ok")
    got = sorted((_source_key(f["key"]), f["reason"]) for f in failures)
    assert len(got) == len(expected), (got, expected)
    for (key, reason), (want_key, want) in zip(got, expected, strict=True):
        assert key == want_key and reason.startswith(want), (key, reason, want)
    assert all(
        f["source"] == "images" and f["shard"] and f["stage"] in ("ingest", "dedupe") for f in failures
    )
    stats = json.loads((run / "stats.json").read_text())
    assert stats["images_in"] == len(truth) == stats["images_ok"] + stats["images_failed"]
    assert stats["images_ok"] == len(rows) and stats["images_failed"] == len(failures)
    shard_ids = {r["provenance"]["source_shard"] for r in rows} | {f["shard"] for f in failures}
    assert len(shard_ids) == (5 if kind == "wds" else 3)


def test_converted_modes_keep_their_size_and_are_published(inputs, runs):
    import io

    from PIL import Image

    rows = _rows(runs["wds"])
    cmyk = rows["000000001"]  # image_cases: index 1 is the CMYK JPEG
    assert (cmyk["width"], cmyk["height"]) == (30, 20)
    assert (
        Image.open(io.BytesIO(cmyk["image"]["bytes"])).mode == "CMYK"
    )  # original bytes, converted when used
    grey16 = rows["000000004"]
    assert (grey16["width"], grey16["height"]) == (20, 24)
    assert rows["000000007"]["caption"] == 'a "quoted" webp caption'


def test_url_and_caption_from_img2dataset_metadata(runs):
    rows = _rows(runs["parquet"])
    assert (
        rows["000000000"]["url"] == "https://example.com/p/rgb"
        and rows["000000000"]["caption"] == "a plain photo"
    )
    failures = {_source_key(f["key"]): f for f in _table(runs["parquet"] / "failures")}
    assert failures["000010014"]["url"] == "https://example.com/p/404"


def test_missing_annotation_images_go_to_training_failures(inputs, runs):
    for run in runs.values():
        rows = pq.read_table(run / "failures" / "training" / "annotations.parquet").to_pylist()
        assert {(r["source"], r["key"]) for r in rows} == inputs["missing"]
        assert {r["reason"] for r in rows} == {"missing image file"}
        assert all(r["url"] for r in rows)  # the path that was looked for


def test_ingest_summary_counts(runs):
    state = runs["wds"] / "_state"
    ingest = json.loads((state / "ingest" / "_stage.json").read_text())["counts"]
    dedupe = json.loads((state / "dedupe" / "_stage.json").read_text())["counts"]
    assert ingest["images_usable"] + ingest["images_failed"] == ingest["images_in"]
    assert dedupe["images_ok"] + dedupe["images_failed"] == ingest["images_usable"]
    reasons = Counter(ingest["failure_reasons"]) + Counter(dedupe["failure_reasons"])
    assert sum(reasons.values()) == ingest["images_failed"] + dedupe["images_failed"]
    examples = json.loads((state / "examples" / "_stage.json").read_text())
    assert examples["examples_skipped"]["generator"]["gqa: skipped_no_answer"] == 1
    stats = json.loads((runs["wds"] / "stats.json").read_text())  # and counted in stats.json, by reason
    assert stats["failure_reasons"] == dict(reasons)
    assert stats["images_failed"] == ingest["images_failed"] + dedupe["images_failed"]
    assert stats["images_converted"] == ingest["images_converted"] > 0


def test_malformed_annotation_stops_the_run_at_ingest(inputs, tmp_path):
    src = inputs["sources"]
    regions = tmp_path / "region_descriptions.json"
    text = open(src["vg"]["regions"], "rb").read()
    at = text.index(b'"phrase"', len(text) // 2)
    regions.write_bytes(text[:at] + b"phrase" + text[at + 8 :])  # a key without its quotes
    sources = {**src, "vg": {**src["vg"], "regions": str(regions)}}
    images = {"format": "webdataset", "urls": [f"{inputs['root']}/wds/00000.tar"]}
    manifest = _manifest(tmp_path / "bad.yaml", "bad", images, sources)
    with pytest.raises(FormatError) as info:
        run_manifest(manifest, str(tmp_path / "out"), executor=LocalExecutor())
    assert info.value.path == str(regions) and info.value.position == at
    assert f"{regions} at byte {at}: malformed JSON" in str(info.value)
    assert not (tmp_path / "out" / "failures" / "00000.parquet").exists()  # no shard was read
    assert not (tmp_path / "out" / "_state" / "ingest").exists()
    shutil.rmtree(tmp_path / "out")
