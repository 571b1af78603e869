"""The input stages alone: training examples written in batches; per image shard, records with counts and
reasons; too-small images; keys namespaced by source folder; duplicates across shards (by key and by image
bytes) found once, in shard order; re-runs that neither lose nor duplicate a failure; a shard added at the end
processes that shard only."""

from __future__ import annotations

import json
import logging
import shutil

import pyarrow.parquet as pq
import pytest
import yaml

from jade.app.runner import run_manifest
from jade.pipeline.executor import LocalExecutor
from jade.stages import examples, ingest
from tests.stages import real_inputs as ri


def _manifest(root, urls: list[str], **ingest_settings) -> str:
    sources = (
        ri.annotations(root / "ann")["sources"]
        if not (root / "ann").exists()
        else json.loads((root / "ann.json").read_text())
    )
    (root / "ann.json").write_text(json.dumps(sources))
    path = root / f"m{len(list(root.glob('m*.yaml')))}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "ingest-only",
                "sources": {"images": {"format": "webdataset", "urls": urls}, **sources},
                "ingest": ingest_settings,
            }
        )
    )
    return str(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest-inputs")
    (root / "wds").mkdir()
    ri.img2dataset_webdataset(root / "wds", 0, seed=3)
    ri.generic_webdataset(root / "wds" / "00001.tar", 5, ["rgb", "cmyk", "zero"])
    ri.generic_webdataset(root / "wds" / "00002.tar", 6, ["rgb", "palette"])  # "images/rgb" again
    return root


def _run(manifest, out, stages=("ingest", "dedupe")):
    return run_manifest(manifest, str(out), only=list(stages), executor=LocalExecutor())


def _failures(run_dir):
    return {f.name: pq.read_table(f).to_pylist() for f in sorted((run_dir / "failures").glob("*.parquet"))}


def test_shard_records_count_every_sample_with_its_reason(inputs, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(ingest, "PROGRESS_EVERY_S", 0.0)  # a progress line after every sample
    manifest = _manifest(inputs, [f"{inputs}/wds/{{00000..00002}}.tar"], min_image_size=1)
    with caplog.at_level(logging.INFO, logger="jade"):
        summary = _run(manifest, tmp_path / "run")
    assert any(
        m.startswith("ingest 00000: ") and "samples so far" in m
        for m in (r.getMessage() for r in caplog.records)
    )
    rec = json.loads((tmp_path / "run/_state/ingest/00000.json").read_text())
    c = rec["counts"]
    assert rec["images"] == c["images_in"] == 17 and rec["images_per_s"] > 0 and rec["checksum"]
    assert c["converted_from"] == {"CMYK": 1, "P": 2, "I;16": 1, "RGBA": 1, "LA": 1}
    assert c["failure_reasons"] == {
        "corrupt image": 2,
        "empty image": 1,
        "decompression bomb": 1,
        "missing caption": 2,
        "duplicate key": 1,
        "download failed": 1,
        "resize failed": 1,
    }
    assert json.loads((tmp_path / "run/_state/ingest/00001.json").read_text())["reader"] == {
        "skipped_unnamed_members": 1,  # the stray README
        "skipped_extra_members": 3,  # the .cls members
    }
    i, d = summary["ingest"]["counts"], summary["dedupe"]["counts"]
    assert i["images_in"] == i["images_usable"] + i["images_failed"] == 17 + 3 + 2
    assert (
        d["images_ok"] + d["images_failed"] == i["images_usable"]
        and d["failure_reasons"]["duplicate key"] == 1
    )
    samples = pq.read_table(tmp_path / "run/_work/dedupe/00000.parquet").to_pylist()
    assert all(s["key"] == f"wds/{s['source_key']}" and len(s["sha256"]) == 64 for s in samples)


def test_examples_are_written_in_batches(inputs, tmp_path, monkeypatch):
    monkeypatch.setattr(examples, "FLUSH_ROWS", 3)
    manifest = _manifest(inputs, [f"{inputs}/wds/00000.tar"])
    summary = _run(manifest, tmp_path / "run", ["examples"])["examples"]
    f = pq.ParquetFile(tmp_path / "run/_work/examples/generator.parquet")
    assert f.metadata.num_row_groups > 3 and f.metadata.num_rows == sum(
        summary["examples"]["generator"].values()
    )
    assert not (tmp_path / "run/_work/examples/parts").exists()


def test_images_below_the_minimum_size_are_failures(inputs, tmp_path):
    manifest = _manifest(inputs, [f"{inputs}/wds/00000.tar"], min_image_size=30)
    _run(manifest, tmp_path / "run")
    reasons = {f["key"]: f["reason"] for f in _failures(tmp_path / "run")["00000.parquet"]}
    # image_cases: grey16 is 20x24, cmyk 30x20, webp 32x32 (kept)
    assert reasons["wds/000000004"] == "too small: 20x24" and reasons["wds/000000001"] == "too small: 30x20"
    assert "wds/000000007" not in reasons


def test_two_folders_with_the_same_keys_never_collide(inputs, tmp_path):
    for name in ("train", "val"):
        (tmp_path / name).mkdir()
        ri.img2dataset_webdataset(tmp_path / name, 0, seed=3)  # keys from 000000000 in both, as img2dataset
    manifest = _manifest(
        inputs, [f"{tmp_path}/train/00000.tar", f"{tmp_path}/val/00000.tar"], min_image_size=1, dedupe=False
    )
    _run(manifest, tmp_path / "run")
    failures = _failures(tmp_path / "run")
    assert not [
        f for rows in failures.values() for f in rows if f["reason"].startswith("duplicate key: also")
    ]
    keys = [
        pq.read_table(tmp_path / f"run/_work/dedupe/{s}-00000.parquet").column("key").to_pylist()
        for s in ("train", "val")
    ]
    assert keys[0] and [k.replace("train/", "val/") for k in keys[0]] == keys[1]


def test_byte_identical_images_are_one_image(inputs, tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        ri.img2dataset_webdataset(tmp_path / name, 0, seed=3)  # the same images under other keys
    manifest = _manifest(inputs, [f"{tmp_path}/a/00000.tar", f"{tmp_path}/b/00000.tar"], min_image_size=1)
    _run(manifest, tmp_path / "run")
    dups = _failures(tmp_path / "run")["b-00000.duplicates.parquet"]
    kept = pq.read_table(tmp_path / "run/_work/dedupe/a-00000.parquet").column("key").to_pylist()
    assert len(dups) == len(kept) and all(
        d["reason"] == f"duplicate image: same as {k}" for d, k in zip(dups, kept, strict=True)
    )
    assert pq.read_table(tmp_path / "run/_work/dedupe/b-00000.parquet").num_rows == 0


def test_rerun_neither_loses_nor_duplicates_failures(inputs, tmp_path):
    manifest = _manifest(inputs, [f"{inputs}/wds/{{00000..00002}}.tar"], min_image_size=1)
    out = tmp_path / "run"
    _run(manifest, out)
    before = _failures(out)
    reasons = [
        r["reason"] for r in before["00002.duplicates.parquet"]
    ]  # the generic tars repeat a name and an image
    assert reasons == ["duplicate key: also in shard 00001", "duplicate image: same as wds/000000002"]
    summary = _run(manifest, out)  # everything is done: nothing is read again
    assert (
        summary["ingest"]["shards_run"] == summary["dedupe"]["shards_run"] == 0 and _failures(out) == before
    )
    # A crash after a shard's files were written but before its record: the shard is done again, once.
    (out / "_state/dedupe/00002.json").unlink()
    summary = _run(manifest, out)
    assert summary["dedupe"]["shards_run"] == 1 and _failures(out) == before


def test_a_shard_added_at_the_end_is_the_only_one_processed(inputs, tmp_path):
    shutil.copytree(inputs / "wds", tmp_path / "wds")
    (tmp_path / "wds/00002.tar").rename(tmp_path / "later.tar")
    out = tmp_path / "run"
    _run(_manifest(inputs, [f"{tmp_path}/wds/*.tar"], min_image_size=1), out, ("ingest", "dedupe"))
    (tmp_path / "later.tar").rename(tmp_path / "wds/00002.tar")
    summary = _run(_manifest(inputs, [f"{tmp_path}/wds/*.tar"], min_image_size=1), out, ("ingest", "dedupe"))
    assert summary["ingest"]["shards_run"] == summary["dedupe"]["shards_run"] == 1
    assert summary["dedupe"]["shards"] == 3
    (tmp_path / "wds/00002.tar").unlink()  # and removed again: its outputs go with it
    summary = _run(_manifest(inputs, [f"{tmp_path}/wds/*.tar"], min_image_size=1), out, ("ingest", "dedupe"))
    assert summary["ingest"]["shards_run"] == 0 and not (out / "_work/dedupe/00002.parquet").exists()
    assert not (out / "failures/00002.parquet").exists()
