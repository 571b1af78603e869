"""The ingest stage alone: progress lines, per-shard records, examples written in batches, re-runs that
neither lose nor duplicate a failure (cross-shard duplicate keys included)."""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from jade.pipeline.config import load_manifest
from jade.pipeline.executor import LocalExecutor
from jade.pipeline.rundir import RunDir
from jade.pipeline.runner import run_manifest, stage_fingerprints
from jade.stages import ingest
from tests.stages import real_inputs as ri


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("ingest-inputs")
    (root / "wds").mkdir()
    ri.img2dataset_webdataset(root / "wds", 0, seed=3)
    ri.generic_webdataset(root / "wds" / "00001.tar", 5, ["rgb", "cmyk", "zero"])
    ri.generic_webdataset(root / "wds" / "00002.tar", 6, ["rgb", "palette"])  # "images/rgb" again
    sources = ri.annotations(root / "ann")["sources"]
    path = root / "m.yaml"
    path.write_text(yaml.safe_dump({"name": "ingest-only", "sources": {
        "images": {"format": "webdataset", "urls": [f"{root}/wds/{{00000..00002}}.tar"]}, **sources}}))  # fmt: skip
    return str(path)


def _failures(run_dir):
    return {f.name: pq.read_table(f).to_pylist() for f in sorted((run_dir / "failures").glob("*.parquet"))}


def test_progress_lines_and_shard_records(manifest, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(ingest, "PROGRESS_EVERY_S", 0.0)  # a progress line after every sample
    with caplog.at_level(logging.INFO, logger="jade"):
        summary = run_manifest(manifest, str(tmp_path / "run"), only=["ingest"], executor=LocalExecutor())[
            "ingest"
        ]
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("ingest 00000: ") and "samples so far" in m and "images/s" in m for m in lines)
    done = [m for m in lines if m.startswith("ingest 00000: 17 in, 8 ok (6 converted to RGB), 9 failed")]
    assert len(done) == 1 and done[0].endswith("images/s")
    assert any(m.startswith("ingest: 3 shards, ") and "images/s" in m for m in lines)
    assert any(m.startswith("ingest generator-") and "examples" in m for m in lines)
    rec = json.loads((tmp_path / "run/_state/ingest/00000.json").read_text())
    assert rec["images_in"] == 17 and rec["images_per_s"] > 0 and rec["checksum"]
    assert rec["converted_from"] == {"CMYK": 1, "P": 2, "I;16": 1, "RGBA": 1, "LA": 1}
    assert rec["failure_reasons"] == {"corrupt image": 2, "empty image": 1, "decompression bomb": 1,
                                      "missing caption": 2, "duplicate key": 1, "download failed": 1,
                                      "resize failed": 1}  # fmt: skip
    assert json.loads((tmp_path / "run/_state/ingest/00001.json").read_text())["reader"] == {
        "skipped_unnamed_members": 1,  # the stray README
        "skipped_extra_members": 3,  # the .cls members
    }
    assert summary["images_in"] == summary["images_ok"] + summary["images_failed"] == 17 + 3 + 2
    assert summary["cross_shard_duplicates"] == 1 and summary["failure_reasons"]["duplicate key"] == 2


def test_examples_are_written_in_batches(manifest, tmp_path, monkeypatch):
    monkeypatch.setattr(ingest, "FLUSH_ROWS", 3)
    summary = run_manifest(manifest, str(tmp_path / "run"), only=["ingest"], executor=LocalExecutor())[
        "ingest"
    ]
    f = pq.ParquetFile(tmp_path / "run/_work/ingest/generator.parquet")
    assert f.metadata.num_row_groups > 3 and f.metadata.num_rows == sum(
        summary["examples"]["generator"].values()
    )
    assert not (tmp_path / "run/_work/ingest/parts").exists()


def test_rerun_neither_loses_nor_duplicates_failures(manifest, tmp_path):
    out = tmp_path / "run"
    run_manifest(manifest, str(out), only=["ingest"], executor=LocalExecutor())
    before = _failures(out)
    assert [r["reason"] for r in before["00002.parquet"]] == ["duplicate key: also in shard 00001"]
    (out / "_state/ingest/_stage.json").unlink()  # the stage re-runs; its shards are done
    summary = run_manifest(manifest, str(out), only=["ingest"], executor=LocalExecutor())["ingest"]
    assert _failures(out) == before and summary["cross_shard_duplicates"] == 0
    assert summary["images_failed"] == sum(len(v) for v in before.values())
    # A crash after the failures were written but before the samples were: the duplicate is moved once.
    run, fp = RunDir(out), stage_fingerprints(load_manifest(manifest))["ingest"]
    samples = run.work("ingest") / "samples"
    table = pq.read_table(samples / "00002.parquet")
    dup = next(r for r in pq.read_table(samples / "00001.parquet").to_pylist() if r["key"] == "images/rgb")
    pq.write_table(
        pa.Table.from_pylist([*table.to_pylist(), dup], schema=table.schema), samples / "00002.parquet"
    )
    recs = {s: json.loads((out / f"_state/ingest/{s}.json").read_text()) for s in ("00000", "00001", "00002")}
    assert ingest.cross_shard_duplicates(run, fp, ["00000", "00001", "00002"], recs) == 1
    assert _failures(out) == before
    assert pq.read_table(samples / "00002.parquet").num_rows == table.num_rows
    assert recs["00002"]["images_failed"] == len(before["00002.parquet"])
