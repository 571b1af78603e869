"""`generate.condition: region` (issue 28): questions asked per kept dense-caption region, the prompt carrying the
region's box and caption; the pair's region and JADE type reach rejected/ and the published dataset, whose schema
gains them only under this condition. Plumbing with the fake backends of tests/fakerun.py (a real-model run of
the region path: tests/stages/test_e2e.py)."""

import json

import datasets
import pyarrow.parquet as pq
import pytest

from jade.app.manifest import ManifestError, load_manifest
from jade.app.runner import stage_fingerprints
from jade.formats.dataset import FEATURES, REGION_QA_FIELDS
from jade.models import tasks
from tests.fakerun import REGION, make_fake_run

ENV = {"SAMPLE_WORLD": "/world"}


def manifest(sets=()):
    return load_manifest("sample", list(sets), env=ENV)


@pytest.fixture(scope="module")
def region_run(tmp_path_factory):
    return make_fake_run(tmp_path_factory.mktemp("fake-region") / "run", REGION)


def _rows(run):
    return [r for f in sorted((run / "dataset/data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def test_every_pair_is_about_a_kept_region_of_its_image(region_run):
    rows = _rows(region_run)
    kept = [(r, qa) for r in rows for qa in r["qa"]]
    assert kept
    for row, qa in kept:
        regions = {(tuple(x["bbox"]), x["caption"]) for x in row["regions"]}
        assert (tuple(qa["region"]["bbox"]), qa["region"]["caption"]) in regions
        assert qa["jade_type"] in tasks.JADE_TYPES
        assert qa["type"] == tasks.vqa_type(qa["jade_type"], qa["question"])
    rejected = pq.read_table(sorted((region_run / "rejected").glob("*.parquet"))).to_pylist()
    assert rejected and all(r["region"] and r["jade_type"] for r in rejected)


def test_counts_add_up_per_region(region_run):
    stats = json.loads((region_run / "stats.json").read_text())
    per_region = sum(manifest().generate.region_questions.values())
    assert stats["questions_generated"] == stats["regions_kept"] * per_region > 0
    rejected = pq.read_table(sorted((region_run / "rejected").glob("*.parquet")))
    assert stats["questions_generated"] == stats["qa_kept"] + stats["qa_rejected"]
    assert stats["qa_rejected"] == rejected.num_rows
    assert set(stats["by_type"]) <= set(tasks.QUESTION_TYPES)


def test_schema_gains_the_region_fields_only_under_region(region_run, fake_run):
    ds = datasets.load_dataset(str(region_run / "dataset"), split="train")
    assert set(ds.features["qa"].feature) == {*FEATURES["qa"].feature, *REGION_QA_FIELDS}
    assert any(qa["region"] for r in ds for qa in r["qa"])
    plain = datasets.load_dataset(str(fake_run / "dataset"), split="train")
    assert set(plain.features["qa"].feature) == set(FEATURES["qa"].feature)
    card = (region_run / "dataset/README.md").read_text()
    assert "per kept dense-caption region" in card


def test_region_examples_learned_and_fingerprints_of_type_unchanged(region_run):
    ex = pq.read_table(region_run / "_work/examples/generator.parquet").to_pylist()
    region = [e for e in ex if e["task"] == "region_question"]
    assert region and {e["source"] for e in region} == {"vg", "gqa"}
    for e in region:
        words = e["prefix"].split()
        assert words[0] == "question" and words[1] == e["qtype"] in tasks.JADE_TYPES
        assert tasks.parse_box(" ".join(words[2:])) is not None  # four location tokens, then the caption
        assert tasks.jade_type(e["suffix"]) == e["qtype"] or e["qtype"] == "binary"
    # the region files are read only under condition region: the default's stages are what they were
    base = stage_fingerprints(manifest())
    no_files = stage_fingerprints(manifest(["sources.vg.qa_regions=null", "sources.gqa.scene_graphs=[]"]))
    assert base == no_files
    region = stage_fingerprints(manifest(["generate.condition=region"]))
    assert region["examples"] != base["examples"] and region["ingest"] == base["ingest"]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["generate.condition=regions"], "generate.condition"),
        (["generate.region_questions={which: 2}"], "generate.region_questions"),
        (["generate.region_questions={binary: -1}"], "generate.region_questions.binary"),
        (["generate.condition=region", "generate.captions=0", "generate.region_support=0"], "captions is 0"),
    ],
)
def test_bad_settings_name_the_key(sets, message):
    with pytest.raises(ManifestError, match=message):
        manifest(sets)
