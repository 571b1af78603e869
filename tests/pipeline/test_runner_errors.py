"""An invalid manifest stops before any work, naming the key or the path."""

import pytest

from jade.app.manifest import ManifestError
from jade.app.runner import run_manifest
from jade.pipeline.executor import LocalExecutor


def test_missing_file_named_before_any_work(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text(
        "name: broken\nsources:\n  images: {format: webdataset, urls: ['%s/shards/{00000..00001}.tar']}\n"
        "  vg: {image_data: %s/nope.json, regions: %s/r.json, images: [%s]}\n"
        "  gqa: {questions: [%s/q.json], images: %s}\n  vqa: {questions: %s/q.json, annotations: %s/a.json, images: %s}\n"
        % ((tmp_path,) * 9)
    )
    with pytest.raises(ManifestError, match=r"sources.vg.image_data: no such file or folder: .*nope.json"):
        run_manifest(str(m), str(tmp_path / "out"), executor=LocalExecutor())
    assert not (tmp_path / "out").exists()  # nothing was started


def test_unknown_stage(tmp_path):
    with pytest.raises(ManifestError, match="unknown stage 'gen'"):
        run_manifest("sample", str(tmp_path / "o"), only=["gen"], executor=LocalExecutor())
    assert not (tmp_path / "o").exists()
