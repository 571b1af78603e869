"""Downstream benchmarks with clean truth, on images that nothing else draws: the analogues of COCO captions
(Karpathy train / 5k test: retrieval and captioning, five references an image) and of RefCOCO (a referring
expression -> its object's box, among the boxes of every object of the image: RefCOCO's instances).

Every image comes from its own random stream, ``item_rng(seed, "bench:<split>", index)``: no dataset writer
of the world (``vg``, ``gqa``, ``vqa_train``, ``vqa_val``, ``cc3m``) and no base stream (``base:*``) draws
from these, so neither the factory, its fine-tuning, the base nor any pretraining run sees a benchmark image.
References come from the truth (`sampleworld.captions`), never from the alt-text. Layout under ``out_dir``::

    bench.json                                       format, config, counts, streams
    coco/images/{split}/COCO_{split}_{id:012d}.jpg   split: captrain (fine-tune), captest (test)
    coco/annotations/captions_{split}.json           COCO captions format: images, annotations (5 an image)
    refcoco/images/{split}/{id}.jpg                  split: reftrain (fine-tune), reftest (test)
    refcoco/refs_{split}.json                        RefCOCO's refs and instances, in one JSON file
    truth/{split}_scene_graphs.json                  GQA scene-graph format, as the world's truth

RefCOCO's boxes are COCO's ``[x, y, width, height]`` in pixels; ``annotations`` hold every object of an image
(the candidates), ``refs`` point at one of them (``ann_id``) and carry ``sentences`` of ``sent``. Its images
hold 2 to 4 objects (RefCOCO's images hold several of the category referred to).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from jade.atomic import atomic_dir

from .captions import expressions, scene_captions
from .files import dump_json, write_bytes
from .scene import item_rng, make_scene, object_ids, render_jpeg, scene_graph

FORMAT = "jade-sampleworld-bench/2"  # 2: every object of a RefCOCO image is an annotation
FIRST_OBJECT_ID = 9_000_000  # truth object ids: FIRST_OBJECT_ID + 10 * image id + k
SPLITS = {  # split -> (benchmark, stream, size field)
    "captrain": ("coco", "bench:coco_train", "caption_train_images"),
    "captest": ("coco", "bench:coco_test", "test_images"),
    "reftrain": ("refcoco", "bench:refcoco_train", "region_train_images"),
    "reftest": ("refcoco", "bench:refcoco_test", "region_test_images"),
}


@dataclass
class BenchConfig:
    """Sizes of the benchmarks. The defaults: a 1,000-image test set (retrieval over 1,000 images and 5,000
    captions; captioning), 1,000 referring expressions to locate, and train splits for the fixed fine-tunes."""

    seed: int = 0
    image_size: int = 128
    min_objects: int = 1
    max_objects: int = 4
    test_images: int = 1000
    caption_train_images: int = 2000
    region_train_images: int = 1000
    region_test_images: int = 500
    region_min_objects: int = 2  # a referring expression chooses among at least two objects
    captions_per_image: int = 5
    refs_per_image: int = 2

    def __post_init__(self):
        if not 1 <= self.region_min_objects <= self.max_objects:
            raise ValueError("bench.region_min_objects: need 1 <= region_min_objects <= max_objects")
        if not 1 <= self.min_objects <= self.max_objects <= 9:
            raise ValueError(
                f"bench.min_objects/max_objects: need 1 <= min <= max <= 9, got {self.min_objects}"
            )
        for name in ("test_images", "caption_train_images", "region_train_images", "region_test_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"bench.{name}: must be at least 1")
        for name in ("captions_per_image", "refs_per_image"):
            if getattr(self, name) < 1:
                raise ValueError(f"bench.{name}: must be at least 1")


def _scenes(cfg: BenchConfig, split: str):
    kind, stream, size = SPLITS[split]
    low = cfg.region_min_objects if kind == "refcoco" else cfg.min_objects
    for i in range(getattr(cfg, size)):
        yield i, make_scene(item_rng(cfg.seed, stream, i), cfg.image_size, low, cfg.max_objects)


def _image_entry(image_id: int, file_name: str, size: int) -> dict:
    return {"id": image_id, "file_name": file_name, "width": size, "height": size}


def write_coco_split(root: Path, cfg: BenchConfig, split: str) -> dict:
    """COCO-captions files of one split: images, five truth-derived captions each, the truth."""
    images, annotations, truth = [], [], {}
    for i, scene in _scenes(cfg, split):
        image_id = i + 1
        name = f"COCO_{split}_{image_id:012d}.jpg"
        write_bytes(root / "coco" / "images" / split / name, render_jpeg(scene))
        images.append(_image_entry(image_id, name, cfg.image_size))
        rng = item_rng(cfg.seed, SPLITS[split][1], i, "captions")
        for caption in scene_captions(scene, rng, cfg.captions_per_image):
            annotations.append({"image_id": image_id, "id": len(annotations) + 1, "caption": caption})
        truth[str(image_id)] = scene_graph(scene, object_ids(FIRST_OBJECT_ID + 10 * image_id, scene))
    info = {"description": f"sample-world COCO-captions analogue ({split})", "version": "1.0"}
    doc = {"info": info, "licenses": [], "images": images, "annotations": annotations}
    dump_json(root / "coco" / "annotations" / f"captions_{split}.json", doc)
    dump_json(root / "truth" / f"{split}_scene_graphs.json", truth)
    return {"images": len(images), "captions": len(annotations)}


def write_refcoco_split(root: Path, cfg: BenchConfig, split: str) -> dict:
    """RefCOCO-style refs of one split: up to ``refs_per_image`` objects an image (those an expression
    singles out), each with one expression drawn from the ones that fit it alone."""
    images, anns, refs, truth = [], [], [], {}
    for i, scene in _scenes(cfg, split):
        image_id = i + 1
        name = f"{image_id}.jpg"
        write_bytes(root / "refcoco" / "images" / split / name, render_jpeg(scene))
        images.append(_image_entry(image_id, name, cfg.image_size))
        ids = object_ids(FIRST_OBJECT_ID + 10 * image_id, scene)
        truth[str(image_id)] = scene_graph(scene, ids)
        for oid, o in zip(ids, scene.objects, strict=True):  # every object: the candidates
            box = [o.x, o.y, o.w, o.h]
            anns.append(
                {"id": int(oid), "image_id": image_id, "bbox": box, "area": o.w * o.h, "category_id": 1}
            )
        rng = item_rng(cfg.seed, SPLITS[split][1], i, "refs")
        named = [(oid, o) for oid, o in zip(ids, scene.objects, strict=True) if expressions(scene, o)]
        for oid, o in rng.sample(named, min(cfg.refs_per_image, len(named))):
            ann_id = int(oid)
            sent = rng.choice(expressions(scene, o))
            refs.append(
                {
                    "ref_id": len(refs),
                    "ann_id": ann_id,
                    "image_id": image_id,
                    "split": split,
                    "sentences": [{"sent": sent, "raw": sent, "tokens": sent.split()}],
                }
            )
    categories = [{"id": 1, "name": "shape", "supercategory": "shape"}]
    doc = {"images": images, "annotations": anns, "categories": categories, "refs": refs}
    dump_json(root / "refcoco" / f"refs_{split}.json", doc)
    dump_json(root / "truth" / f"{split}_scene_graphs.json", truth)
    return {"images": len(images), "refs": len(refs)}


def _check_replaceable(out: Path) -> None:
    if out.exists() and any(out.iterdir()) and not (out / "bench.json").exists():
        raise FileExistsError(f"{out} exists and is not a benchmark folder; refusing to replace it")


def write_benchmarks(out_dir: str | Path, cfg: BenchConfig | None = None) -> dict:
    """Write every benchmark split to ``out_dir`` (atomically: the old folder or the complete new one) and
    return the counts (also in ``bench.json``)."""
    cfg = cfg or BenchConfig()
    out = Path(out_dir)
    _check_replaceable(out)
    with atomic_dir(out) as tmp:
        counts = {}
        for split, (kind, _, _) in SPLITS.items():
            write = write_coco_split if kind == "coco" else write_refcoco_split
            counts[split] = write(tmp, cfg, split)
        streams = {split: stream for split, (_, stream, _) in SPLITS.items()}
        meta = {"format": FORMAT, "config": asdict(cfg), "counts": counts, "streams": streams}
        dump_json(tmp / "bench.json", meta, indent=2)
    return counts


def ensure_benchmarks(out_dir: str | Path, cfg: BenchConfig) -> dict:
    """The benchmarks of ``cfg`` in ``out_dir``: written unless the folder already holds exactly these."""
    meta = Path(out_dir) / "bench.json"
    if meta.exists():
        old = json.loads(meta.read_text())
        if old.get("format") == FORMAT and old.get("config") == asdict(cfg):
            return old["counts"]
    return write_benchmarks(out_dir, cfg)


__all__ = ["BenchConfig", "ensure_benchmarks", "write_benchmarks"]
