"""The package installs anywhere: `pip wheel .` builds a wheel with every module and the manifests; installed
into a fresh venv outside the checkout, every `jade.*` module imports from the wheel and `jade run` completes
a tiny manifest with the manifests shipped as package data. (The venv borrows this project's dependencies
through a .pth line, so no torch is downloaded; `jade` itself comes only from the wheel.)"""

import json
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.tiny import TINY

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (whl,) = out.glob("jade_factory-*.whl")
    return whl


def test_the_wheel_holds_every_module_and_the_manifests(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for sub in (
        "pipeline",
        "stages",
        "models",
        "models/backends",
        "models/pretrain",
        "formats",
        "sampleworld",
        "app",
        "reports",
    ):
        assert f"jade/{sub}/__init__.py" in names, sub
    for py in sorted((ROOT / "models" / "backends").glob("*.py")):
        assert f"jade/models/backends/{py.name}" in names
    assert {"jade/manifests/sample.yaml", "jade/manifests/cc3m.yaml"} <= names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "research/"))]


def test_installed_wheel_imports_and_runs_a_tiny_manifest(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # this project's dependencies
    with zipfile.ZipFile(wheel) as z:  # install = unpack a pure wheel into site-packages
        z.extractall(site)
    check = (
        "import importlib, json, pkgutil, jade; "
        "mods = [m.name for m in pkgutil.walk_packages(jade.__path__, 'jade.')]; "
        "[importlib.import_module(m) for m in mods]; print(json.dumps([jade.__file__, len(mods)]))"
    )
    res = subprocess.run([py, "-c", check], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    where, n = json.loads(res.stdout)
    assert Path(where).is_relative_to(site) and n > 50
    out = tmp_path / "run"
    argv = [py, "-m", "jade.app.cli", "run", "sample", "--out", str(out), "--executor", "local"]
    res = subprocess.run(
        [*argv, *(a for s in TINY for a in ("--set", s))],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=480,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    meta = json.loads((out / "run.json").read_text())
    assert Path(meta["code"]).is_relative_to(site)  # the run ran the installed code, not this checkout
    assert json.loads((out / "stats.json").read_text())["images_ok"] > 0
