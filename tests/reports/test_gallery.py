"""`jade gallery` rendered by a real browser (headless Chromium): the screenshot must show the images, the
dense-caption boxes where they belong, kept and rejected pairs in their colours, and the page's filters."""

import io
import json
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jade.formats.run_tables import REJECTED as REJECTED_SCHEMA
from jade.reports.gallery import BOX, KEPT, REJECTED, SHOW, build_gallery
from jade.stages.publish import features

GREEN, BLUE = (0, 170, 0), (0, 0, 200)
IMAGES = {"img-a": (GREEN, (120, 90)), "img-b": (BLUE, (100, 100))}  # colour, (width, height)
REGIONS = {"img-a": [[0.1, 0.2, 0.6, 0.8], [0.55, 0.5, 0.95, 0.95]], "img-b": [[0.25, 0.3, 0.75, 0.7]]}


def _rgb(hex_colour):
    return tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))


def _png(colour, size):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def _qa(q, a, t, fa):
    return {"question": q, "answer": a, "type": t, "filter_answer": fa, "score": 0.9}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory in the published layout, written by hand (no pipeline)."""
    root = tmp_path_factory.mktemp("gallery") / "run"
    prov = {"generator": "g", "filter": "f", "config": "c", "seed": 0, "source_shard": "00000"}
    rows = [
        {
            "key": key,
            "image": {"bytes": _png(colour, size), "path": None},
            "url": None,
            "caption": f"alt {key}",
            "width": size[0],
            "height": size[1],
            "provenance": prov,
            "regions": [
                {"bbox": b, "caption": f"thing {i}", "score": 0.5} for i, b in enumerate(REGIONS[key])
            ],
            "qa": [
                _qa("Is there a thing?", "yes", "yes/no", "yes"),
                _qa("How many things?", "2", "number", "2"),
            ],
        }
        for key, (colour, size) in IMAGES.items()
    ]
    (root / "dataset/data").mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist(rows, schema=features(True).arrow_schema),
        root / "dataset/data/train-00000-00000-of-00001.parquet",
    )
    rejected = [
        {
            "key": key,
            "shard": "00000",
            "question": "What colour is the thing?",
            "type": "other",
            "answer": "red",
            "filter_answer": "blue",
            "reason": "answer mismatch",
            "question_score": 0.5,
            "answer_score": 0.5,
            "filter_score": 0.4,
        }
        for key in IMAGES
    ]
    (root / "rejected").mkdir()
    pq.write_table(pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA), root / "rejected/00000.parquet")
    (root / "stats.json").write_text(
        json.dumps({"images_ok": 2, "qa_kept": 4, "qa_rejected": 2, "keep_rate": 2 / 3})
    )
    return root


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, (
        "headless Chromium is needed to render the gallery: `make browser` installs it as root or with "
        "sudo (`make test` runs it), or install your distribution's chromium package yourself"
    )
    return exe


def screenshot(page, out, tmp_path, fragment=""):
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        "--window-size=1000,900",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={out}",
        page.as_uri() + fragment,
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return Image.open(out).convert("RGB")


def _mask(img, colour, tol=24):
    """Boolean [y, x] array: pixels within `tol` of `colour` on every channel."""
    return (np.abs(np.asarray(img, dtype=np.int16) - np.array(colour, dtype=np.int16)) <= tol).all(axis=2)


def _rect(mask):
    ys, xs = np.nonzero(mask)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


@pytest.fixture(scope="module")
def shots(run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shots")
    page = build_gallery(run, n=10)
    assert page == run / "gallery" / "index.html"
    return {
        frag: screenshot(page, tmp / f"{i}.png", tmp, frag)
        for i, frag in enumerate(["", "#hide=rejected", "#hide=boxes,yes/no"])
    }


def test_images_and_boxes_are_drawn(shots):
    img = shots[""]
    box = _mask(img, _rgb(BOX), tol=40)
    for key, (colour, (w, h)) in IMAGES.items():
        pixels = _mask(img, colour)
        assert pixels.any(), f"{key}: the image is not shown"
        x0, y0, x1, y1 = _rect(pixels)
        assert abs((x1 - x0) - SHOW) <= 2 and abs((y1 - y0) - SHOW * h / w) <= 2, (key, (x0, y0, x1, y1))
        assert pixels.sum() > 0.6 * SHOW * SHOW * h / w  # the image shows (boxes cover only their borders)
        for b in REGIONS[key]:
            left, top = x0 + b[0] * (x1 - x0), y0 + b[1] * (y1 - y0)
            right, bottom = x0 + b[2] * (x1 - x0), y0 + b[3] * (y1 - y0)
            # The bottom, left and right edges (the label sits on the top one) are drawn in the box colour.
            band = box[int(bottom) - 4 : int(bottom) + 2, int(left) + 3 : int(right) - 3]
            assert band.any(axis=0).mean() >= 0.9, (key, b, "bottom")
            for edge in (left, right):
                band = box[int(top) + 20 : int(bottom) - 3, int(edge) - 3 : int(edge) + 3]
                assert band.any(axis=1).mean() >= 0.9, (key, b, "side")
            # Inside, away from the label, the image shows through (boxes are outlines).
            cx, cy = int((left + right) / 2), int(top + 0.75 * (bottom - top))
            assert all(abs(a - c) <= 24 for a, c in zip(img.getpixel((cx, cy)), colour, strict=True))


def test_kept_and_rejected_pairs_and_filters(shots):
    kept, rejected, box = _rgb(KEPT[0]), _rgb(REJECTED[0]), _rgb(BOX)
    default = shots[""]
    assert _mask(default, kept, tol=4).sum() > 2000 and _mask(default, rejected, tol=4).sum() > 1000
    only_kept = shots["#hide=rejected"]
    assert _mask(only_kept, kept, tol=4).sum() > 2000 and not _mask(only_kept, rejected, tol=4).any()
    no_boxes = shots["#hide=boxes,yes/no"]
    assert not _mask(no_boxes, box, tol=40).any() and _mask(no_boxes, GREEN).sum() > 0.9 * SHOW * SHOW * 0.75
    # One kept pair per image left (number) of two: about half the kept area, rejected ones still shown.
    assert 0.3 < _mask(no_boxes, kept, tol=4).sum() / _mask(default, kept, tol=4).sum() < 0.7
    assert _mask(no_boxes, rejected, tol=4).sum() > 1000


def test_images_from_source_shards_when_not_embedded(run, tmp_path):
    # publish.embed_images: false leaves `image` out; the gallery then reads the source shards (none here).
    bare = tmp_path / "bare"
    shutil.copytree(run, bare)
    f = bare / "dataset/data/train-00000-00000-of-00001.parquet"
    pq.write_table(pq.read_table(f).drop_columns(["image"]), f)
    text = build_gallery(bare, tmp_path / "g.html").read_text()
    assert (
        text.count('class="card"') == 2 and "image not available" in text and text.count('class="box"') == 3
    )
