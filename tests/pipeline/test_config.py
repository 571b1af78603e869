from pathlib import Path

import pytest

from jade.pipeline.config import Manifest, ManifestError, build, load_manifest


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


def test_the_model_stages_take_their_decode_rows_from_the_resources(monkeypatch, tmp_path):
    from jade.pipeline.rundir import RunDir
    from jade.pipeline.stage import Runtime
    from jade.stages import filter as filter_stage
    from jade.stages import generate as generate_stage

    asked = []
    for mod in (generate_stage, filter_stage):
        monkeypatch.setattr(mod, "make_backend", lambda name, path, rows, threads: asked.append(rows))
    m = load_manifest(_write(tmp_path, "name: x\n"), ["resources.generate.decode_rows=48"])
    run, rt = RunDir(tmp_path / "run"), Runtime(decode_rows=m.resources.generate.decode_rows)
    generate_stage.Generate().worker(run, generate_stage.Generate().settings(m), rt)
    filter_stage.Filter().worker(run, filter_stage.Filter().settings(m), Runtime(decode_rows=80)).backend  # noqa: B018
    assert asked == [48, 80]


def test_the_shard_mapper_hands_a_model_stage_its_decode_rows(tmp_path):
    """`resources.<stage>.decode_rows` reaches the workers' Runtime (other stages get the default)."""
    from jade.formats.samples import ShardRef
    from jade.pipeline.config import ModelStageResources, StageResources
    from jade.pipeline.executor import LocalExecutor
    from jade.pipeline.rundir import RunDir
    from jade.pipeline.runner import execute
    from jade.pipeline.stage import Runtime, ShardResult

    seen = {}

    class Probe:
        after = ()

        def __init__(self, name, res):
            self.name, self.res = name, res

        def settings(self, m):
            return {}

        def resources(self, m):
            return self.res

        def owns(self, shard_id):
            return []

        def worker(self, run, settings, runtime):
            seen[self.name] = runtime.decode_rows
            return lambda shard: ShardResult({}, {}, 0)

    stages = [Probe("model", ModelStageResources(decode_rows=48)), Probe("plain", StageResources())]
    execute(stages, Manifest(), RunDir(tmp_path), [ShardRef("a", "a.tar", "webdataset")], LocalExecutor())
    assert seen == {"model": 48, "plain": Runtime.decode_rows}
