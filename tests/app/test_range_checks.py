"""Every setting's value is checked where the manifest is read, not only its type: each bounded setting of the
manifest (a `ranged` field, found by walking the typed manifest) is tried just outside its bounds, and the run
stops before any work with a message naming the key. Also: a run directory that cannot be made is a one-line
error, not a traceback."""

import dataclasses
import typing

import pytest

from jade.app.cli import EXIT_INVALID, main
from jade.app.manifest import Manifest, ManifestError, load_manifest


def _dataclass_of(tp):
    for t in (tp, *typing.get_args(tp)):
        if dataclasses.is_dataclass(t):
            return t
    return None


def bounded(cls=Manifest, at=""):
    """(dotted key, a value outside its bounds) for every ranged field under ``cls``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{at}.{f.name}" if at else f.name
        sub = _dataclass_of(hints[f.name])
        if sub is not None:
            yield from bounded(sub, key)
            continue
        meta = f.metadata
        integral = int in (hints[f.name], *typing.get_args(hints[f.name]))
        step = 1 if integral else 0.5
        if "ge" in meta:
            yield key, meta["ge"] - step
        if "gt" in meta:
            yield key, meta["gt"]
        if "le" in meta:
            yield key, meta["le"] + step
        if "lt" in meta:
            yield key, meta["lt"]


CASES = sorted(set(bounded()))


def test_the_walk_finds_the_settings_the_issue_names():
    keys = {k for k, _ in CASES}
    for key in (
        "models.generator.train.steps",
        "models.filter.train.lr",
        "filter.min_score",
        "generate.top_k",
        "sample_world.cc3m_failed_fraction",
        "resources.generate.decode_rows",
        "publish.rows_per_file",
    ):
        assert key in keys
    assert len(CASES) >= 50


@pytest.mark.parametrize("key, value", CASES, ids=[f"{k}={v}" for k, v in CASES])
def test_an_out_of_range_setting_is_refused_naming_the_key(key, value, monkeypatch):
    monkeypatch.setenv("SAMPLE_WORLD", "/nonexistent/world")
    with pytest.raises(ManifestError, match=rf"^{key.replace('.', '[.]')}: must be"):
        load_manifest("sample", [f"{key}={value}"])


def test_jade_run_stops_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "sample", "--out", str(out), "--set", "models.generator.train.steps=-5"])
    err = capsys.readouterr().err
    assert code == EXIT_INVALID and "models.generator.train.steps: must be at least 1, got -5" in err
    assert not out.exists()  # nothing was made


def test_an_unusable_run_directory_is_a_one_line_error(tmp_path, capsys):
    code = main(["run", "sample", "--out", "/proc/jade-run", "--executor", "local"])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_INVALID and "Traceback" not in err
    assert err.startswith("jade: /proc/jade-run: cannot use it as a run directory")
