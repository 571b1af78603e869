"""The real img2dataset (1.47.0 from PyPI, in a venv of its own) downloads a CC3M-style TSV of about 300 lines
from a web server on 127.0.0.1, and the factory reads what it wrote (slow tier).

The TSV covers what the web gives: 404 and 403 answers, refused connections, a redirect, duplicate URLs,
palette / palette+alpha / RGBA / LA / CMYK / grey / 16-bit images, a decompression bomb, a truncated JPEG, a
zero-byte file, an HTML page named .jpg, 1x1 and 400x3 images, and empty, unicode, 1000-character and
space-padded captions. img2dataset writes it twice: webdataset with the original bytes
(`--disable_all_reencoding`, so the factory meets every bad case itself) and parquet re-encoded at 64 px
(img2dataset's own resizer catches some cases first). The factory runs on each (fake backends: the subject
is the input side), and then:

- every TSV line is accounted for exactly once: a published row or a `failures/` row, keyed by img2dataset's
  key under the source folder, with img2dataset's messages carried word for word;
- published keys, URLs and captions are img2dataset's, exactly;
- in the original-bytes run, each bad case has its one reason ("decompression bomb: 10000x9000 (90000000
  pixels)", "too small: 1x1", "duplicate image: same as KEY", ...), and converted modes are counted;
- stats.json adds up, and both `load_dataset(DIR)` and `load_dataset("parquet", data_files=...)` return
  exactly each run's rows, the two runs through one datasets cache (both folders are named `dataset`).

The venv is built once under $JADE_TEST_CACHE (default ~/.cache/jade-tests) and reused: building it takes
2-2.5 minutes (pip, about 40 packages). Measured on 2 CPUs shared with two training jobs, the venv in place:
2 min 37 s for the module (each img2dataset run ~40 s: 3 shards of 100 lines in one process; each factory
run ~20-30 s, fine-tuning included).
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from jade.app.runner import run_manifest
from jade.formats.samples import failure_reason
from jade.pipeline.executor import LocalExecutor
from tests.fakerun import FAKE
from tests.stages import real_inputs as ri

# the module fixtures build img2dataset's venv (2-2.5 min) and run it and the factory twice, in the first test
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
VERSION = "1.47.0"
ARCH = {
    "image_size": 32,
    "patch_size": 8,
    "vision_hidden": 32,
    "vision_layers": 1,
    "text_hidden": 64,
    "text_layers": 1,
    "vocab_size": 400,
}
TRAIN = {"steps": 3, "batch_size": 4, "warmup_steps": 1}
LONG = ("a very long alt-text " * 50)[:1000]
UNICODE = "Ünïcödé caption: 漢字 かな 😀 עברית — ½ ° €"


# ------------------------------------------------------------------------------------------------- the web
def _img(mode: str, size, fmt: str, seed: int, **save) -> bytes:
    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(6):  # a few rectangles: every image's bytes are its own
        x0, y0 = rng.randrange(size[0]), rng.randrange(size[1])
        img.paste(
            tuple(rng.randrange(256) for _ in range(3)), (x0, y0, min(size[0], x0 + 9), min(size[1], y0 + 7))
        )
    if mode == "P":
        img = img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    elif mode == "I;16":
        img = img.convert("L").point(lambda v: v).convert("I").point(lambda v: v * 200).convert("I;16")
    elif mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def web(port_refused: int, base: str) -> tuple[dict, list[tuple[str, str, str]]]:
    """The files the server serves (path -> (status, content type, body)) and the TSV lines (url, caption,
    what the original-bytes run must make of it: "ok" or the exact failure reason, "dup:N" for a duplicate
    of line N)."""
    files: dict[str, tuple[int, str, bytes]] = {}
    lines: list[tuple[str, str, str]] = []

    def add(path, body, caption, expect, ctype="image/jpeg", status=200):
        files[path] = (status, ctype, body)
        lines.append((f"{base}{path}", caption, expect))

    for i in range(250):
        size = (40 + (i * 7) % 90, 36 + (i * 11) % 80)
        caption = {3: UNICODE, 4: LONG, 5: "", 6: "  padded with spaces  "}.get(
            i, f"a photo number {i} of a thing"
        )
        add(
            f"/photo/{i}.jpg",
            _img("RGB", size, "JPEG", i, quality=90),
            caption,
            "missing caption" if caption == "" else "ok",
        )
    for n, (mode, fmt, ctype) in enumerate(
        [
            ("P", "PNG", "image/png"),
            ("P", "GIF", "image/gif"),
            ("RGBA", "PNG", "image/png"),
            ("LA", "PNG", "image/png"),
            ("CMYK", "JPEG", "image/jpeg"),
            ("L", "JPEG", "image/jpeg"),
            ("I;16", "PNG", "image/png"),
        ]
    ):
        add(
            f"/mode/{mode.replace(';', '')}-{n}.{fmt.lower()}",
            _img(mode, (48, 40), fmt, 1000 + n),
            f"an image in mode {mode}",
            "ok",
            ctype,
        )
    pal = Image.open(io.BytesIO(ri.palette_png(True))).resize((40, 40))
    buf = io.BytesIO()
    pal.save(buf, "PNG", transparency=0)
    add("/mode/palette-alpha.png", buf.getvalue(), "a palette icon with a hole", "ok", "image/png")
    add(
        "/bomb.png",
        ri.bomb_png(),
        "too many pixels",
        "decompression bomb: 10000x9000 (90000000 pixels)",
        "image/png",
    )
    add("/truncated.jpg", ri.truncated_jpeg(), "half a jpeg", "corrupt image:")
    add("/zero.jpg", b"", "a zero-byte file", "empty image")
    add(
        "/page.jpg",
        b"<!doctype html><html><body>Not an image</body></html>",
        "an html page",
        "corrupt image: unknown image format",
        "text/html",
    )
    add("/one.png", _img("RGB", (1, 1), "PNG", 7), "one pixel", "too small: 1x1", "image/png")
    add("/strip.jpg", _img("RGB", (400, 3), "JPEG", 8), "a thin strip", "too small: 400x3")
    add("/moved.jpg", b"", "a redirect to photo 10", "dup:10", "text/plain", 302)
    for i in range(12):
        lines.append(
            (f"{base}/gone/{i}.jpg", f"a dead link {i}", "download failed: HTTP Error 404: Not Found")
        )
    for i in range(3):
        add(
            f"/secret/{i}.jpg",
            b"",
            f"forbidden {i}",
            "download failed: HTTP Error 403: Forbidden",
            status=403,
        )
    for i in range(5):
        lines.append(
            (
                f"http://127.0.0.1:{port_refused}/{i}.jpg",
                f"nobody listens {i}",
                "download failed: <urlopen error [Errno 111] Connection refused>",
            )
        )
    for i in range(0, 100, 10):  # the same URL again, under another caption
        lines.append((f"{base}/photo/{i}.jpg", f"the same photo again ({i})", f"dup:{i}"))
    return files, lines


class Handler(BaseHTTPRequestHandler):
    files: dict = {}

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path not in self.files:
            self.send_error(404)
            return
        status, ctype, body = self.files[self.path]
        if status == 302:
            self.send_response(302)
            self.send_header("Location", "/photo/10.jpg")
            self.end_headers()
            return
        if status != 200:
            self.send_error(status)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture(scope="module")
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with socket.socket() as s:  # a port nobody listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        refused = s.getsockname()[1]
    files, lines = web(refused, f"http://127.0.0.1:{srv.server_address[1]}")
    Handler.files = files
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield lines
    srv.shutdown()


# ------------------------------------------------------------------------------------------ img2dataset
@pytest.fixture(scope="module")
def img2dataset() -> Path:
    """img2dataset's venv: built once (a marker file written last), then reused."""
    venv = (
        Path(os.environ.get("JADE_TEST_CACHE", Path.home() / ".cache" / "jade-tests"))
        / f"img2dataset-{VERSION}"
    )
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        env = {
            k: v for k, v in os.environ.items() if k != "PIP_CONSTRAINT"
        }  # its own pins, not the project's
        done = subprocess.run(
            [str(venv / "bin/pip"), "install", "-q", f"img2dataset=={VERSION}"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        (venv / ".complete").touch()
    return venv / "bin/img2dataset"


def download(img2dataset, lines, out: Path, fmt: str, *options: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tsv = out.parent / f"{out.parent.name}.tsv"
    tsv.write_text("url\tcaption\n" + "".join(f"{u}\t{c}\n" for u, c, _ in lines), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["no_proxy"] = "127.0.0.1,localhost"
    argv = [
        str(img2dataset),
        "--url_list",
        str(tsv),
        "--input_format",
        "tsv",
        "--url_col",
        "url",
        "--caption_col",
        "caption",
        "--output_format",
        fmt,
        "--output_folder",
        str(out),
        "--processes_count",
        "1",
        "--thread_count",
        "16",
        "--number_sample_per_shard",
        "100",
        "--timeout",
        "5",
        "--retries",
        "0",
        "--enable_wandb",
        "False",
        "--distributor",
        "multiprocessing",
        *options,
    ]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


# ------------------------------------------------------------------------------------------------ the runs
def _manifest(path: Path, images: dict, sources: dict) -> str:
    manifest = {
        "name": path.stem,
        "seed": 0,
        "sources": {"images": images, **sources},
        "models": {
            "generator": {"architecture": ARCH, "train": TRAIN},
            "filter": {"architecture": ARCH, "train": TRAIN},
        },
        "generate": {
            "captions": 1,
            "questions": {"yes/no": 1, "number": 0, "other": 1},
            "max_new_tokens": {"caption": 6, "question": 6, "answer": 3},
        },
    }  # ingest: the defaults, min_image_size 32 and dedupe on
    path.write_text(yaml.safe_dump(manifest))
    return str(path)


@pytest.fixture(scope="module")
def runs(server, img2dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("i2d")
    sources = ri.annotations(root / "ann")["sources"]
    result = {}
    for kind, fmt, suffix, options in (
        ("wds", "webdataset", "tar", ["--resize_mode", "no", "--disable_all_reencoding", "True"]),
        ("parquet", "parquet", "parquet", ["--resize_mode", "keep_ratio", "--image_size", "64"]),
    ):
        folder = root / kind / "cc3m"  # the source folder: keys are "cc3m/<img2dataset key>"
        download(img2dataset, server, folder, fmt, *options)
        images = {"format": fmt, "urls": [f"{folder}/*.{suffix}"]}
        manifest = _manifest(root / f"{kind}.yaml", images, sources)
        run_manifest(manifest, str(root / f"run-{kind}"), FAKE, executor=LocalExecutor())
        result[kind] = (folder, root / f"run-{kind}")
    return result


def _table(paths, columns=None):
    return [r for p in sorted(paths) for r in pq.read_table(p, columns=columns).to_pylist()]


def _sidecar(folder: Path) -> dict[str, dict]:
    """img2dataset's own record of every line (its parquet: the sidecar of a tar, or the data itself)."""
    cols = ["key", "url", "caption", "status", "error_message"]
    return {r["key"]: r for r in _table(folder.glob("*.parquet"), cols)}


@pytest.mark.parametrize("kind", ["wds", "parquet"])
def test_every_line_is_accounted_for_once(server, runs, kind):
    folder, run = runs[kind]
    meta = _sidecar(folder)
    assert len(meta) == len(server)  # img2dataset wrote one record per TSV line
    for key, m in meta.items():  # its keys number the lines (100 per shard: shard * 100 + index)
        url, caption, _ = server[int(key)]
        assert (m["url"], m["caption"]) == (url, caption)
    rows = _table((run / "dataset/data").glob("*.parquet"), ["key", "url", "caption", "provenance"])
    failures = _table((run / "failures").glob("*.parquet"))
    outcome = [r["key"] for r in rows] + [f["key"] for f in failures]
    assert len(outcome) == len(set(outcome)) and set(outcome) == {f"cc3m/{k}" for k in meta}
    for r in rows:
        m = meta[r["provenance"]["source_key"]]
        assert (r["key"], r["url"], r["caption"], m["status"]) == (
            f"cc3m/{m['key']}",
            m["url"],
            m["caption"],
            "success",
        )
    for f in failures:
        m = meta[f["key"].split("/", 1)[1]]
        if m["status"] != "success":  # img2dataset's message, word for word
            assert f["reason"] == failure_reason(m["status"], m["error_message"]) and m["error_message"]
    stats = json.loads((run / "stats.json").read_text())
    assert (stats["images_in"], stats["images_ok"], stats["images_failed"]) == (
        len(meta),
        len(rows),
        len(failures),
    )


def test_each_bad_case_has_its_reason(server, runs):
    folder, run = runs["wds"]
    rows = {r["key"]: r for r in _table((run / "dataset/data").glob("*.parquet"), ["key", "width", "height"])}
    reasons = {f["key"]: f["reason"] for f in _table((run / "failures").glob("*.parquet"))}
    keys = {int(k): f"cc3m/{k}" for k in _sidecar(folder)}
    for i, (url, _, expect) in enumerate(server):
        key = keys[i]
        if expect == "ok":
            assert key in rows, (url, reasons.get(key))
        elif expect.startswith("dup:"):
            assert reasons[key] == f"duplicate image: same as {keys[int(expect[4:])]}", url
        else:
            assert reasons.get(key, "").startswith(expect), (url, reasons.get(key))
            assert expect.endswith(":") or reasons[key] == expect
    stats = json.loads((run / "stats.json").read_text())
    assert stats["converted_from"] == {"CMYK": 1, "I;16": 1, "L": 1, "LA": 1, "P": 3, "RGBA": 1}


def test_both_load_forms_give_each_runs_rows(runs, tmp_path):
    cache = tmp_path / "hf-cache"  # one cache for both runs: both folders are named `dataset`
    for kind in ("wds", "parquet", "wds"):
        _, run = runs[kind]
        own = sorted(
            (r["key"], r["caption"], r["width"], r["height"])
            for r in _table((run / "dataset/data").glob("*.parquet"), ["key", "caption", "width", "height"])
        )
        stats = json.loads((run / "stats.json").read_text())
        assert len(own) == stats["images_ok"] > 200
        for ds in (
            datasets.load_dataset(str(run / "dataset"), split="train", cache_dir=str(cache)),
            datasets.load_dataset(
                "parquet", data_files=str(run / "dataset/data/*.parquet"), split="train", cache_dir=str(cache)
            ),
        ):
            assert sorted(zip(ds["key"], ds["caption"], ds["width"], ds["height"], strict=True)) == own, kind
            img = ds[0]["image"]
            assert isinstance(img, Image.Image) and img.size == (ds[0]["width"], ds[0]["height"])
