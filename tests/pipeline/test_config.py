import pytest

from jade.pipeline.config import Manifest, ManifestError, build, load_manifest


def _write(tmp_path, text):
    p = tmp_path / "m.yaml"
    p.write_text(text)
    return str(p)


def test_bundled_manifests_load(monkeypatch):
    monkeypatch.setenv("SAMPLE_WORLD", "/tmp/w")
    m = load_manifest("sample")
    assert m.name == "sample" and m.generate.questions["yes/no"] == 3
    assert m.sources.vg.images == ["/tmp/w/vg/VG_100K", "/tmp/w/vg/VG_100K_2"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\nbogus: 1\n", "bogus: unknown key"),
        ("generate:\n  top_k: many\n", "generate.top_k: expected int"),
        ("generate:\n  questions: {why: 2}\n", "generate.questions: 'why' is not one of"),
        ("models:\n  generator:\n    train: {stepz: 3}\n", "models.generator.train.stepz: unknown key"),
        ("publish:\n  embed_images: maybe\n", "publish.embed_images: expected true/false"),
        ("sources:\n  images: {format: zip, urls: [a]}\n", "sources.images.format: 'zip' is not one of"),
        ("sources:\n  vg: {image_data: ${JADE_TEST_UNSET_VAR}/x.json}\n", "JADE_TEST_UNSET_VAR"),
    ],
)
def test_errors_name_the_key(tmp_path, monkeypatch, text, message):
    monkeypatch.delenv("JADE_TEST_UNSET_VAR", raising=False)
    with pytest.raises(ManifestError, match=message.replace("$", r"\$").replace("{", r"\{")):
        load_manifest(_write(tmp_path, text))


def test_overrides_by_dotted_path(tmp_path):
    m = load_manifest(_write(tmp_path, "name: x\n"), ["generate.top_k=7", "models.generator.train.steps=3"])
    assert m.generate.top_k == 7 and m.models.generator.train.steps == 3
    with pytest.raises(ManifestError, match="generate.nope"):
        load_manifest(_write(tmp_path, "name: x\n"), ["generate.nope=1"])


def test_role_defaults_survive_partial_sections():
    m = build(Manifest, {"models": {"filter": {"train": {"steps": 5}}}}, "")
    assert m.models.filter.data == ["vqa"] and m.models.filter.train.steps == 5
    assert m.models.generator.tasks == ["caption", "question", "answer"]
