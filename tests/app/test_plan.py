"""`jade plan` and the check `jade run` makes before any work: no data, no weights, unset roots allowed."""

import json
import logging
import shlex

import pytest

from jade.app import plan
from jade.app.cli import main
from jade.app.manifest import BASES_DIR
from jade.app.runner import run_manifest
from jade.pipeline.rundir import RunDir
from tests.tiny import TINY

ROOTS = ("CC3M_ROOT", "CC12M_ROOT", "VG_ROOT", "GQA_ROOT", "VQA_ROOT", "COCO_ROOT", "SAMPLE_WORLD")
EVERYTHING_OFF = [
    "models.generator.train.precision=fp32",
    "models.generator.train.micro_batch=32",
    "models.generator.train.gradient_checkpointing=false",
    "models.generator.train.freeze=[]",
    "models.generator.train.lora=null",
]


@pytest.fixture(autouse=True)
def no_roots(monkeypatch):
    for v in ROOTS:
        monkeypatch.delenv(v, raising=False)


@pytest.mark.parametrize("name", ["cc3m", "cc12m"])
def test_the_cc_manifests_fit_one_80gb_gpu_per_role(name, capsys):
    assert main(["plan", name, "--gpu-memory", "80"]) == 0
    out = capsys.readouterr().out
    rows = {
        line.split()[0]: line.split()[-1]
        for line in out.splitlines()
        if line.startswith(("generator", "filter"))
    }
    assert rows == {"generator": "yes", "filter": "yes"}
    assert "published PaliGemma-3B-224" in out or "config" in out


def test_everything_off_does_not_fit_and_names_the_generator(capsys):
    sets = [x for s in EVERYTHING_OFF for x in ("--set", s)]
    assert main(["plan", "cc3m", "--gpu-memory", "80", *sets]) == 1
    out = capsys.readouterr().out
    assert "generator does not fit; the smallest change that does: set models.generator.train." in out
    assert main(["plan", "cc3m", "--gpu-memory", "80", "--json", *sets]) == 1
    report = json.loads(capsys.readouterr().out)
    keys = {"params", "trainable_params", "weights_gib", "grads_gib", "optimizer_gib", "activations_gib"}
    assert set(report) == {"generator", "filter", "pretrainer"}
    for role in report.values():
        assert keys | {"peak_gib", "fits"} <= set(role)
    assert report["generator"]["fits"] is False and report["filter"]["fits"] is True
    assert report["generator"]["params"] == 2_923_466_480
    assert report["generator"]["peak_gib"] > 80 > report["filter"]["peak_gib"]


def test_the_fix_it_names_fits():
    m = plan.load("cc3m", EVERYTHING_OFF)
    fix = next(rp.fix for rp in plan.plan_manifest(m, 80 * 2**30) if rp.role == "generator")
    sets = [shlex.split(x)[0] for x in fix.split("--set ")[1:]]
    fixed = next(rp for rp in plan.plan_manifest(plan.load("cc3m", EVERYTHING_OFF + sets), 80 * 2**30))
    assert fixed.role == "generator" and fixed.plan.fits


def test_bad_settings_are_named(capsys):
    assert main(["plan", "cc3m", "--set", "models.generator.train.freeze=[vision_towr]"]) == 2
    assert "models.generator.train.freeze[0]: no module named 'vision_towr'" in capsys.readouterr().out


def test_run_refuses_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    sets = [x for s in TINY for x in ("--set", s)]
    code = main(["run", "sample", "--out", str(out), "--executor", "local", "--gpu-memory", "0.001", *sets])
    assert code == 2
    err = capsys.readouterr().err
    assert "does not fit: models.generator needs" in err and "models.filter needs" in err
    assert not (out / "run.json").exists() and not (out / "world").exists()  # nothing was done


def test_without_a_gpu_nothing_is_refused_and_it_says_so(tmp_path, caplog):
    m = plan.load("sample", TINY)
    with caplog.at_level(logging.INFO, logger="jade"):
        plan.check_run(m, ["generator", "filter"], None, None)
    assert "not checked against a GPU's memory" in caplog.text
    assert "plan: generator" in caplog.text


def test_only_roles_that_will_train_are_checked(tmp_path):
    from jade.app.runner import stage_fingerprints

    m = plan.load("sample", TINY)
    run = RunDir(tmp_path / "run")
    fps = stage_fingerprints(m)
    assert plan.roles_to_train(run, None, fps) == ["generator", "filter"]
    assert plan.roles_to_train(run, ["ingest", "finetune_filter"], fps) == ["filter"]
    assert plan.roles_to_train(run, ["ingest"], fps) == []
    plan.check_run(m, [], None, 0.001)  # nothing to train: nothing refused
    with pytest.raises(plan.PlanError):
        run_manifest("sample", str(tmp_path / "r2"), TINY, ["finetune_filter"], gpu_memory=0.001)


def test_the_sample_manifest_plans_its_shipped_base(capsys, monkeypatch):
    """${JADE_BASES} is the package's bases, as `jade run` reads it, not an unset variable left as it is."""
    monkeypatch.delenv("JADE_BASES", raising=False)
    assert main(["plan", "sample"]) == 0
    out = capsys.readouterr().out
    assert "architecture: " + str(BASES_DIR / "sampleworld-tiny" / "config.json") in out
