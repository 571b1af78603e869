"""Row provenance carries each model's training options when either was trained other than the default way;
trained the default way, the provenance (and so the published bytes) is what it was before the options."""

import json

from jade.formats.dataset import FEATURES, features
from jade.models import factory
from jade.pipeline.rundir import RunDir
from jade.stages.finetune import Finetune
from jade.stages.publish import training_provenance

DEFAULT = {"precision": "fp32", "micro_batch": 32, "batch_size": 32, "gradient_checkpointing": False,
           "freeze": [], "lora": None, "strategy": "ddp", "workers": 1}  # fmt: skip
MODELS = {role: Finetune.checkpoint(role) for role in ("generator", "filter")}


def _checkpoints(tmp_path, generator: dict | None, filter_: dict | None) -> RunDir:
    run = RunDir(tmp_path / "run")
    for role, rec in (("generator", generator), ("filter", filter_)):
        d = run.path(MODELS[role])
        d.mkdir(parents=True)
        meta = {"role": role} if rec is None else {"role": role, "training": rec}
        (d / factory.JADE_META).write_text(json.dumps(meta))
    return run


def test_default_training_adds_nothing(tmp_path):
    assert training_provenance(_checkpoints(tmp_path, DEFAULT, None), MODELS) == {}
    assert features(True, False) == FEATURES
    assert "generator_training" not in features(False, False)["provenance"]


def test_other_options_are_recorded_for_both_models(tmp_path):
    bf16 = {**DEFAULT, "precision": "bf16", "micro_batch": 8, "freeze": ["vision_tower"]}
    prov = training_provenance(_checkpoints(tmp_path, bf16, DEFAULT), MODELS)
    assert json.loads(prov["generator_training"]) == bf16
    assert json.loads(prov["filter_training"]) == DEFAULT
    feats = features(True, True)["provenance"]
    assert {"generator_training", "filter_training"} <= set(feats)


def test_published_rows_carry_the_options(fake_run, tmp_path):
    """A whole run (fake engines, real tiny models): trained the default way, its rows have no training fields;
    republished with a generator trained in bf16, every row carries both models' options."""
    import shutil

    import pyarrow.parquet as pq

    from jade.app.refilter import refilter

    def provenance(run) -> list[dict]:
        files = sorted((run / "dataset" / "data").glob("*.parquet"))
        return [r["provenance"] for f in files for r in pq.read_table(f, columns=["provenance"]).to_pylist()]

    assert all("generator_training" not in p for p in provenance(fake_run))
    run = tmp_path / "run"
    shutil.copytree(fake_run, run)
    meta_path = RunDir(run).path(MODELS["generator"]) / factory.JADE_META
    meta = json.loads(meta_path.read_text())
    assert meta["training"]["precision"] == "fp32"  # the loop recorded its (default) options
    meta["training"] = {**meta["training"], "precision": "bf16", "freeze": ["vision_tower"]}
    meta_path.write_text(json.dumps(meta))
    refilter(str(run), ["filter.normalization=none"])  # a rule that changes the rows: republished
    rows = provenance(run)
    assert rows and all(json.loads(p["generator_training"])["precision"] == "bf16" for p in rows)
    assert all(json.loads(p["filter_training"])["precision"] == "fp32" for p in rows)
    card = (run / "dataset" / "README.md").read_text()
    assert "generator_training" in card  # the card's features name the fields the files carry
