"""`models.<role>.finetune: false`: a finished run's fine-tuned checkpoint becomes the role's model unchanged
(manifests/sample-paper.yaml reuses the default run's models this way)."""

import json

import pytest

from jade.app.manifest import ManifestError, load_manifest
from jade.pipeline.rundir import fingerprint, plain
from jade.stages.finetune import FinetuneSettings, ModelSpec, adopt


def _checkpoint(path, attention="image"):
    path.mkdir()
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"weights")
    record = {"role": "filter", "attention": attention, "fingerprint": "old", "train_metrics": {"steps": 7}}
    (path / "jade_model.json").write_text(json.dumps(record))
    return path


def test_adopt_copies_the_checkpoint_and_keeps_its_record(tmp_path):
    base = _checkpoint(tmp_path / "done")
    tmp = tmp_path / ".filter.tmp"
    summary = adopt(base, tmp, {"role": "filter", "fingerprint": "new"}, "image")
    assert (tmp / "model.safetensors").read_bytes() == b"weights"
    record = json.loads((tmp / "jade_model.json").read_text())
    assert record["fingerprint"] == "new" and record["adopted_from"] == str(base)
    assert record["attention"] == "image" and record["train_metrics"] == {"steps": 7}
    assert summary["adopted_from"] == str(base) and summary["steps"] == 7


def test_adopt_refuses_another_attention_rule_and_a_non_checkpoint(tmp_path):
    base = _checkpoint(tmp_path / "done", attention="prefix")
    with pytest.raises(ValueError, match="'prefix'.*'image'"):
        adopt(base, tmp_path / "t", {"role": "filter", "fingerprint": "x"}, "image")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a fine-tuned checkpoint"):
        adopt(tmp_path / "empty", tmp_path / "t", {"role": "filter", "fingerprint": "x"}, "image")


def test_finetune_false_needs_a_base():
    env = {"SAMPLE_WORLD": "/nowhere"}
    m = load_manifest("sample-paper", env=env)
    assert not m.models.generator.finetune and m.models.generator.base.endswith("checkpoints/generator")
    with pytest.raises(ManifestError, match="models.filter.finetune: false needs models.filter.base"):
        load_manifest("sample-paper", ["models.filter.base=null"], env=env)


def test_the_default_keeps_the_fingerprints_of_runs_made_before_the_setting():
    settings = FinetuneSettings(ModelSpec(base="b", data=["vqa"]), "paligemma", 0)
    assert "finetune" not in plain(settings)["spec"]
    # these settings' fingerprint as the code before `finetune` computed it (main at a9fbd71)
    assert fingerprint(settings) == "dc66725f7a8acc3c"
    adopted = FinetuneSettings(ModelSpec(base="b", data=["vqa"], finetune=False), "paligemma", 0)
    assert plain(adopted)["spec"]["finetune"] is False and fingerprint(adopted) != fingerprint(settings)
