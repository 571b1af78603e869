"""Reading the downstream benchmarks: COCO-captions files (retrieval and captioning) and RefCOCO-style refs (the
region task), in the layout `sampleworld.benchmarks` writes; any folder in that layout works (real COCO
captions and a JSON export of RefCOCO's refs and instances included). Images are decoded once and resized to
the model's input size.

    coco/annotations/captions_{split}.json + coco/images/{split}/{file_name}
    refcoco/refs_{split}.json + refcoco/images/{split}/{file_name}

A box is (x0, y0, x1, y1) as fractions of the image, as everywhere in the pretrainer (COCO's boxes are
``[x, y, width, height]`` in pixels).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


@dataclass
class CaptionSet:
    """Images with their reference captions (COCO: five each), aligned by index."""

    image_ids: list[int]
    images: list
    refs: list[list[str]]

    def __len__(self) -> int:
        return len(self.image_ids)


@dataclass
class RefSet:
    """Referring expressions: the image each is about, the expression, its object's box, and the boxes of every
    object of that image (the candidates, the target among them)."""

    images: list
    sentences: list[str]
    boxes: list[tuple[float, float, float, float]]
    candidates: list[list[tuple[float, float, float, float]]]

    def __len__(self) -> int:
        return len(self.sentences)


def _read(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"benchmark file not found: {path}")
    return json.loads(path.read_text())


def _image(path: Path, size: int):
    with Image.open(path) as f:
        return f.convert("RGB").resize((size, size), Image.BICUBIC)


def load_captions(folder: str | Path, split: str, size: int, limit: int | None = None) -> CaptionSet:
    """The first ``limit`` images (by id) of a COCO-captions split, with every reference caption of each."""
    root = Path(folder) / "coco"
    doc = _read(root / "annotations" / f"captions_{split}.json")
    refs = defaultdict(list)
    for a in doc["annotations"]:
        refs[a["image_id"]].append(" ".join(a["caption"].split()))
    images = sorted(doc["images"], key=lambda im: im["id"])[:limit]
    out = CaptionSet([], [], [])
    for im in images:
        if not refs[im["id"]]:
            continue  # an image with no caption cannot be scored
        out.image_ids.append(im["id"])
        out.images.append(_image(root / "images" / split / im["file_name"], size))
        out.refs.append(refs[im["id"]])
    return out


def load_refs(folder: str | Path, split: str, size: int, limit: int | None = None) -> RefSet:
    """The first ``limit`` refs of a split, one (image, expression, box) per ref's first sentence."""
    root = Path(folder) / "refcoco"
    doc = _read(root / f"refs_{split}.json")
    images = {im["id"]: im for im in doc["images"]}
    anns = {a["id"]: a for a in doc["annotations"]}
    of_image = defaultdict(list)
    for a in doc["annotations"]:
        of_image[a["image_id"]].append(a)
    cache: dict[int, object] = {}
    out = RefSet([], [], [], [])
    for ref in doc["refs"][:limit]:
        im = images[ref["image_id"]]
        if ref["image_id"] not in cache:
            cache[ref["image_id"]] = _image(root / "images" / split / im["file_name"], size)
        out.images.append(cache[ref["image_id"]])
        out.sentences.append(" ".join(ref["sentences"][0]["sent"].split()))
        out.boxes.append(_box(anns[ref["ann_id"]], im))
        out.candidates.append([_box(a, im) for a in of_image[ref["image_id"]]])
    return out


def _box(ann: dict, im: dict) -> tuple[float, float, float, float]:
    x, y, w, h = ann["bbox"]
    return (x / im["width"], y / im["height"], (x + w) / im["width"], (y + h) / im["height"])
