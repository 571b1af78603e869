from pathlib import Path

import pytest

from jade.app.manifest import Manifest, ManifestError, load_manifest
from jade.typed import build


def _write(tmp_path, text):
    p = tmp_path / "m.yaml"
    p.write_text(text)
    return str(p)


def test_bundled_manifests_load(monkeypatch):
    monkeypatch.setenv("SAMPLE_WORLD", "/tmp/w")
    m = load_manifest("sample")
    assert m.name == "sample" and m.generate.questions["yes/no"] == 5
    # both roles fine-tune from the base shipped with the package (${JADE_BASES} needs no setting)
    assert m.models.generator.base == m.models.filter.base
    assert Path(m.models.filter.base, "model.safetensors").is_file()
    assert m.sources.vg.images == ["/tmp/w/vg/VG_100K", "/tmp/w/vg/VG_100K_2"]


def test_a_relative_bases_folder_is_made_absolute(monkeypatch, tmp_path):
    """Ray workers that load the base may run elsewhere: ${JADE_BASES} given relative becomes absolute."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAMPLE_WORLD", "/tmp/w")
    monkeypatch.setenv("JADE_BASES", "my-bases")
    m = load_manifest("sample")
    assert m.models.generator.base == str(tmp_path / "my-bases" / "sampleworld-tiny")


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


def test_decode_rows_is_a_typed_resource_of_the_model_stages(tmp_path):
    m = load_manifest(_write(tmp_path, "name: x\n"))
    assert m.resources.generate.decode_rows == 256 and m.resources.filter.decode_rows == 256
    m = load_manifest(_write(tmp_path, "name: x\n"), ["resources.filter.decode_rows=64"])
    assert m.resources.filter.decode_rows == 64 and m.resources.generate.decode_rows == 256
    for value, message in (
        ("many", "resources.generate.decode_rows: expected int"),
        ("0", "resources.generate.decode_rows: must be at least 1"),
    ):
        with pytest.raises(ManifestError, match=message):
            load_manifest(_write(tmp_path, "name: x\n"), [f"resources.generate.decode_rows={value}"])
    with pytest.raises(ManifestError, match="resources.ingest.decode_rows: unknown key"):
        load_manifest(_write(tmp_path, "name: x\n"), ["resources.ingest.decode_rows=64"])


def test_the_model_stages_take_their_decode_rows_from_the_resources(tmp_path):
    """`resources.<generate,filter>.decode_rows` reaches the engines that the stages' workers make (through
    the backend registry: a probe backend records what it is given)."""
    from jade.app.runner import build_stages
    from jade.models.backends import register_backend
    from jade.pipeline.rundir import RunDir
    from jade.pipeline.stage import Runtime
    from jade.stages.answers import Answers
    from jade.stages.generate import Generate

    asked = []
    register_backend("probe-rows")(lambda model_dir, options: asked.append(options.decode_rows))
    m = load_manifest(
        _write(tmp_path, "name: x\n"),
        [
            "resources.generate.decode_rows=48",
            "resources.filter.decode_rows=80",
            "generate.backend=probe-rows",
        ],
    )
    stages = {type(st): st for st in build_stages(m)}
    run = RunDir(tmp_path / "run")
    stages[Generate].worker(run, Runtime())
    stages[Answers].worker(run, Runtime())
    assert asked == [48, 80]
