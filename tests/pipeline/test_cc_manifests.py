"""manifests/cc3m.yaml and cc12m.yaml: valid once the roots are set (every path they name exists in the
documented layout), a clear error naming the variable when one is not."""

from __future__ import annotations

import pytest

from jade.app.manifest import ManifestError, load_manifest
from jade.app.runner import check_paths

COMMON = ("VG_ROOT", "GQA_ROOT", "VQA_ROOT", "COCO_ROOT")
CASES = [("cc3m", "CC3M_ROOT"), ("cc12m", "CC12M_ROOT")]


def _layout(root, shards_var: str) -> dict[str, str]:
    """The folders as the README says to lay them out (empty files stand in for the data)."""
    env = {var: str(root / var.lower()) for var in (shards_var, *COMMON)}
    files = [
        f"{shards_var.lower()}/00000.tar",
        f"{shards_var.lower()}/00000.parquet",
        "vg_root/image_data.json",
        "vg_root/region_descriptions.json",
        "vg_root/question_answers.json",
        "vg_root/VG_100K/1.jpg",
        "vg_root/VG_100K_2/2.jpg",
        "gqa_root/questions/train_balanced_questions.json",
        "gqa_root/images/2354786.jpg",
        "vqa_root/v2_OpenEnded_mscoco_train2014_questions.json",
        "vqa_root/v2_mscoco_train2014_annotations.json",
        "coco_root/train2014/COCO_train2014_000000000009.jpg",
    ]
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).touch()
    return env


@pytest.mark.parametrize(("name", "var"), CASES)
def test_valid_with_roots_set(tmp_path, name, var):
    env = _layout(tmp_path, var)
    m = load_manifest(name, env=env)
    assert m.name == name
    assert m.sources.images.format == "webdataset" and m.sources.images.urls == [f"{env[var]}/*.tar"]
    assert m.sources.vg.images == [f"{env['VG_ROOT']}/VG_100K", f"{env['VG_ROOT']}/VG_100K_2"]
    assert m.sources.vqa.images == f"{env['COCO_ROOT']}/train2014"
    for role in ("generator", "filter"):
        assert getattr(m.models, role).base == "google/paligemma-3b-pt-224"  # pretrained, not from scratch
    assert m.models.generator.data == ["vg", "gqa"] and m.models.filter.data == ["vqa"]
    assert m.sample_world is None
    check_paths(m)  # every file and folder the manifest names is where the README puts it


@pytest.mark.parametrize(("name", "var"), CASES)
def test_each_unset_root_is_named(tmp_path, name, var):
    env = _layout(tmp_path, var)
    for missing in (var, *COMMON):
        with pytest.raises(ManifestError, match=rf"environment variable \$\{{{missing}\}} is not set"):
            load_manifest(name, env={k: v for k, v in env.items() if k != missing})


def test_a_root_without_the_data_is_named(tmp_path):
    env = _layout(tmp_path, "CC3M_ROOT")
    (tmp_path / "cc3m_root" / "00000.tar").unlink()
    with pytest.raises(ManifestError, match=r"sources.images.urls: no file matches .*cc3m_root/\*\.tar"):
        check_paths(load_manifest("cc3m", env=env))
