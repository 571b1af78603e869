"""A run that grows and shrinks, and shards in which nothing is usable (fake backends, the tiny sample world:
the subject is the bookkeeping).

- Adding an image shard to a finished run reuses the checkpoints (the fine-tune stages are skipped) and runs
  ingest, dedupe, generate, filter and publish on the new shard only; removing it again takes its rows out of
  the dataset, and the run is what it was before, card included. Both load forms follow, through one cache.
- A shard with no usable image publishes no file; the dataset loads, the counts add up, `jade run` exits 0
  naming the shard, and `jade status` says so. When no image at all is usable, `jade run` exits 4.
- `jade status --shards` lists the stages in data-flow order, with failure reasons and converted modes.
"""

import io
import json
import shutil

import datasets
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jade.app.cli import main
from jade.app.runner import STAGE_NAMES, run_manifest
from jade.pipeline.executor import LocalExecutor
from tests.fakerun import FAKE
from tests.stages.real_inputs import _write_tar, palette_png
from tests.tiny import TINY

SHARD_STAGES = ("ingest", "dedupe", "generate", "answers", "filter", "publish")
WHOLE_STAGES = ("examples", "finetune_generator", "finetune_filter")


def _jpeg(i: int, mode: str = "RGB", size=(64, 48)) -> bytes:
    img = Image.new(mode, size, (0, 0, 0, 0) if mode == "CMYK" else (0, 0, 0))
    img.putpixel(
        (i % size[0], i // size[0]), (255, 255, 255, 0) if mode == "CMYK" else (255, 20 * i % 256, 9)
    )
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def good_shard(path):
    """5 usable images: 3 RGB, a CMYK JPEG and a palette PNG (converted), all distinct bytes."""
    pal = Image.open(io.BytesIO(palette_png(False))).resize((40, 40))
    buf = io.BytesIO()
    pal.save(buf, "PNG")
    images = [
        ("img0.jpg", _jpeg(0)),
        ("img1.jpg", _jpeg(1)),
        ("img2.jpg", _jpeg(2)),
        ("cmyk.jpg", _jpeg(3, "CMYK")),
        ("pal.png", buf.getvalue()),
    ]
    members = [
        m for name, data in images for m in ((name, data), (name.rsplit(".")[0] + ".txt", b"a new image"))
    ]
    _write_tar(path, members)
    return [f"extra/{name.rsplit('.')[0]}" for name, _ in images]


def empty_shard(path):
    """4 images, none usable: zero bytes, not an image, too small (8x8), no caption."""
    _write_tar(
        path,
        [
            ("zero.jpg", b""),
            ("zero.txt", b"zero bytes"),
            ("html.jpg", b"<html>Not found</html>"),
            ("html.txt", b"a page"),
            ("tiny.jpg", _jpeg(0, size=(8, 8))),
            ("tiny.txt", b"tiny"),
            ("nocap.jpg", _jpeg(5)),
        ],
    )


def _urls(fake_run, extra):
    return "sources.images.urls=" + json.dumps(
        [f"{fake_run}/world/cc3m/{{00000..00001}}.tar", f"{extra}/*.tar"]
    )


def _rows(run):
    files = sorted((run / "dataset/data").glob("*.parquet"))
    return sorted((r for f in files for r in pq.read_table(f).to_pylist()), key=lambda r: r["key"])


def _loaded(run, cache):
    forms = [
        datasets.load_dataset(str(run / "dataset"), split="train", cache_dir=str(cache)),
        datasets.load_dataset(
            "parquet", data_files=str(run / "dataset/data/*.parquet"), split="train", cache_dir=str(cache)
        ),
    ]
    return [sorted(zip(d["key"], (json.dumps(q) for q in d["qa"]), strict=True)) for d in forms]


def _own(run):
    return sorted((r["key"], json.dumps(r["qa"])) for r in _rows(run))


@pytest.fixture
def run(fake_run, tmp_path, monkeypatch):
    """A copy of the fake run (the same sources: SAMPLE_WORLD names the original's world) and a folder for
    an extra shard; the fake backends in place."""
    out = tmp_path / "run"
    shutil.copytree(fake_run, out)
    (tmp_path / "extra").mkdir()
    monkeypatch.setenv("SAMPLE_WORLD", str(fake_run / "world"))
    return out


def test_adding_a_shard_runs_it_alone_and_removing_it_restores_the_run(run, fake_run, tmp_path, capsys):
    extra, cache = tmp_path / "extra", tmp_path / "hf-cache"
    assert _loaded(run, cache) == [_own(fake_run)] * 2
    new_keys = good_shard(extra / "00002.tar")
    ckpt = run / "checkpoints/generator/model.safetensors"
    ckpt_mtime, old_files = (
        ckpt.stat().st_mtime_ns,
        {p.name: p.read_bytes() for p in (run / "dataset/data").iterdir()},
    )

    summaries = run_manifest(
        "sample", str(run), [*TINY, *FAKE, _urls(fake_run, extra)], executor=LocalExecutor()
    )
    assert all(summaries[st]["skipped"] for st in WHOLE_STAGES)  # the checkpoints are reused
    assert ckpt.stat().st_mtime_ns == ckpt_mtime
    for st in SHARD_STAGES:
        assert (summaries[st]["shards"], summaries[st]["shards_run"]) == (3, 1), st
    rows = _rows(run)
    assert [r["key"] for r in rows if r["provenance"]["source_shard"] == "00002"] == sorted(new_keys)
    assert {
        p.name: p.read_bytes() for p in (run / "dataset/data").iterdir() if p.name in old_files
    } == old_files
    stats = json.loads((run / "stats.json").read_text())
    assert stats["images_ok"] == len(rows) == len(_rows(fake_run)) + 5 and stats["converted_from"] == {
        "CMYK": 1,
        "P": 1,
    }
    assert stats["images_in"] == stats["images_ok"] + stats["images_failed"]
    assert _loaded(run, cache) == [_own(run)] * 2  # not the cached rows of the run before

    # status: data-flow order, failure reasons and converted modes per shard
    assert main(["status", str(run), "--shards"]) == 0
    out = capsys.readouterr().out.splitlines()
    stage_lines = [line.split()[0] for line in out[1:] if not line.startswith(" ")]
    assert stage_lines == STAGE_NAMES
    ingest = out.index(next(line for line in out if line.startswith("ingest ")))
    assert "failure_reasons: download failed 1" in out[ingest + 1]  # 00000: the world's failed download
    assert "converted_from: CMYK 1, P 1" in out[ingest + 3]  # 00002
    assert "not running" in out[0] and "ingest               done     3/3 shards" in out

    summaries = run_manifest("sample", str(run), TINY + FAKE, executor=LocalExecutor())  # removed again
    assert all(summaries[st]["shards_run"] == 0 for st in SHARD_STAGES)
    assert not list(run.glob("**/00002*")) and not list((run / "dataset/data").glob("train-00002-*"))
    assert _rows(run) == _rows(fake_run)
    for rel in ("stats.json", "dataset/README.md"):
        assert (run / rel).read_text() == (fake_run / rel).read_text(), rel
    assert _loaded(run, cache) == [_own(fake_run)] * 2


def test_a_shard_with_no_usable_image(run, fake_run, tmp_path, capsys):
    extra, cache = tmp_path / "extra", tmp_path / "hf-cache"
    empty_shard(extra / "00002.tar")
    argv = [
        "run",
        "sample",
        "--out",
        str(run),
        "--executor",
        "local",
        *(a for s in TINY + FAKE for a in ("--set", s)),
    ]
    assert main([*argv, "--set", _urls(fake_run, extra)]) == 0
    err = capsys.readouterr().err
    assert (
        "1 shard(s) had no usable image and publish no file: 00002 (4 images: corrupt image 1, empty image 1, "
        "missing caption 1, too small 1)"
    ) in err
    stats = json.loads((run / "stats.json").read_text())
    assert stats["empty_shards"] == {
        "00002": {
            "images_in": 4,
            "failure_reasons": {"corrupt image": 1, "empty image": 1, "missing caption": 1, "too small": 1},
        }
    }
    assert stats["images_in"] == stats["images_ok"] + stats["images_failed"] == 16 + 4
    failures = [r for f in sorted((run / "failures").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert len(failures) == stats["images_failed"]
    assert {r["reason"] for r in failures if r["key"].startswith("extra/")} == {
        "empty image",
        "corrupt image: unknown image format",
        "too small: 8x8",
        "missing caption",
    }
    assert not list((run / "dataset/data").glob("train-00002-*"))
    assert _loaded(run, cache) == [_own(fake_run)] * 2 and stats["images_ok"] == len(_rows(fake_run))
    assert main(["status", str(run)]) == 0
    assert "publish              done     3/3 shards, no usable image in: 00002" in capsys.readouterr().out

    # Nothing usable anywhere: the run ends, says so, and exits 4; the dataset has no data file.
    assert main([*argv, "--set", _urls(fake_run, extra), "--set", "ingest.min_image_size=1000"]) == 4
    err = capsys.readouterr().err
    assert "3 shard(s) had no usable image" in err and "no image was usable (20 in, 20 failed)" in err
    assert not list((run / "dataset/data").glob("*.parquet"))
    stats = json.loads((run / "stats.json").read_text())
    assert stats["images_ok"] == 0 and stats["images_failed"] == stats["images_in"] == 20
