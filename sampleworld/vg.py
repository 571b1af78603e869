"""Visual Genome 1.2 writer: image_data, region descriptions, question answers, the QA-to-region mapping and
the v1.2 object, attribute and relationship files, laid out exactly as the published JSON (see the real-format fixtures:
top-level ``id`` in regions and QAs, raw answers such as ``"Two."``, no trailing newline)."""

from __future__ import annotations

import random
from pathlib import Path

from .files import dump_json, write_bytes
from .language import region_phrases as _phrases
from .language import sample_question_records
from .scene import Obj, Scene, item_rng, make_scene, object_ids, relations, render_jpeg, scene_graph

URL = "https://cs.stanford.edu/people/rak248/{folder}/{image_id}.jpg"
FIRST_OBJECT_ID = 1_000_000  # object ids: FIRST_OBJECT_ID + 10 * image index + k
SYNSETS = {"circle": "circle.n.01", "square": "square.n.01", "triangle": "triangle.n.01"}
REL_SYNSETS = {
    "to the left of": "left.r.01",
    "to the right of": "right.r.01",
    "above": "above.r.01",
    "below": "below.r.01",
}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def raw_answer(answer: str, qtype: str, rng: random.Random) -> str:
    """A canonical answer written the Visual Genome way: capitalised with a full stop, numbers often
    as words (``"2" -> "Two."`` or ``"2."``)."""
    text = answer
    if qtype == "number" and int(answer) < len(NUMBER_WORDS) and rng.random() < 0.6:
        text = NUMBER_WORDS[int(answer)]
    return text[:1].upper() + text[1:] + "."


def image_folder(image_id: int) -> str:
    """VG splits its images over two folders; the sample world alternates."""
    return "VG_100K" if image_id % 2 else "VG_100K_2"


def _box(o: Obj, oid: int, extra: dict) -> dict:
    return {"synsets": [SYNSETS[o.shape]], "h": o.h, "object_id": oid, "names": [o.shape], "w": o.w} | extra


def _rel_end(o: Obj, oid: int) -> dict:
    return {
        "name": o.shape,
        "h": o.h,
        "object_id": oid,
        "synsets": [SYNSETS[o.shape]],
        "w": o.w,
        "y": o.y,
        "x": o.x,
    }


def _regions(
    scene: Scene, image_id: int, first_region_id: int, n: int, rng: random.Random
) -> tuple[list[dict], list[int]]:
    """``n`` region descriptions cycling over the objects, each a padded object box and a phrase; and the index
    (in ``scene.objects``) of the object each describes."""
    objs = list(scene.objects)
    rng.shuffle(objs)
    phrases = [_phrases(o, rng) for o in objs]
    index = {id(o): k for k, o in enumerate(scene.objects)}
    out, owners = [], []
    for r in range(n):
        o = objs[r % len(objs)]
        owners.append(index[id(o)])
        options = phrases[r % len(objs)]
        phrase = options[(r // len(objs)) % len(options)]
        x0, y0 = max(0, o.x - rng.randint(0, 3)), max(0, o.y - rng.randint(0, 3))
        x1 = min(scene.image_size, o.x + o.w + rng.randint(0, 3))
        y1 = min(scene.image_size, o.y + o.h + rng.randint(0, 3))
        out.append(
            {
                "region_id": first_region_id + r,
                "width": x1 - x0,
                "height": y1 - y0,
                "image_id": image_id,
                "phrase": phrase,
                "y": y0,
                "x": x0,
            }
        )
    return out, owners


def _qa_region(refs: tuple, regions: list[dict], owners: list[int]) -> int | None:
    """The region a question was written about, as VG's qa_to_region_mapping.json gives it: the first region of
    the first object the question names (None when it names none, e.g. "Are there any squares?" -> no)."""
    if not refs:
        return None
    k = int(refs[0].id)
    return next((r["region_id"] for r, owner in zip(regions, owners, strict=True) if owner == k), None)


def write_vg(root: Path, cfg) -> dict:
    """Write ``root/vg/...`` and ``root/truth/vg_scene_graphs.json``; return counts."""
    vg = root / "vg"
    image_data, regions, qas, objects, attributes, rels, truth = [], [], [], [], [], [], {}
    qa_regions: dict[str, int] = {}
    n_regions = n_qas = n_rels = 0
    for i in range(cfg.vg_images):
        image_id = i + 1
        scene = make_scene(item_rng(cfg.seed, "vg", i), cfg.image_size, cfg.min_objects, cfg.max_objects)
        folder = image_folder(image_id)
        write_bytes(vg / folder / f"{image_id}.jpg", render_jpeg(scene))
        ids = object_ids(FIRST_OBJECT_ID + 10 * i, scene)
        truth[str(image_id)] = scene_graph(scene, ids)
        size = scene.image_size
        image_data.append(
            {
                "width": size,
                "url": URL.format(folder=folder, image_id=image_id),
                "height": size,
                "image_id": image_id,
                "coco_id": None,
                "flickr_id": None,
            }
        )
        rng = item_rng(cfg.seed, "vg", i, "regions")
        reg, owners = _regions(scene, image_id, i * cfg.regions_per_image + 1, cfg.regions_per_image, rng)
        regions.append({"regions": reg, "id": image_id})
        rng = item_rng(cfg.seed, "vg", i, "qa")
        records = sample_question_records(scene, rng, cfg.qas_per_image)
        qa = [
            {
                "a_objects": [],
                "question": r.question,
                "image_id": image_id,
                "qa_id": i * cfg.qas_per_image + j + 1,
                "answer": raw_answer(r.answer, r.qtype, rng),
                "q_objects": [],
            }
            for j, r in enumerate(records)
        ]
        for entry, r in zip(qa, records, strict=True):
            if (region_id := _qa_region(r.refs, reg, owners)) is not None:
                qa_regions[str(entry["qa_id"])] = region_id
        qas.append({"id": image_id, "qas": qa})
        pairs = list(zip(map(int, ids), scene.objects, strict=True))
        objects.append(
            {"image_id": image_id, "objects": [_box(o, k, {"y": o.y, "x": o.x}) for k, o in pairs]}
        )
        attrs = [_box(o, k, {"attributes": [o.color, o.size], "y": o.y, "x": o.x}) for k, o in pairs]
        attributes.append({"image_id": image_id, "attributes": attrs})
        image_rels = []
        for ks, s in pairs:
            for ko, o in pairs:
                for pred in relations(s, o) if s is not o else ():
                    n_rels += 1
                    image_rels.append(
                        {
                            "predicate": pred,
                            "object": _rel_end(o, ko),
                            "relationship_id": n_rels,
                            "synsets": [REL_SYNSETS[pred]],
                            "subject": _rel_end(s, ks),
                        }
                    )
        rels.append({"relationships": image_rels, "image_id": image_id})
        n_regions += len(reg)
        n_qas += len(qa)
    dump_json(vg / "image_data.json", image_data)
    dump_json(vg / "region_descriptions.json", regions)
    dump_json(vg / "question_answers.json", qas)
    dump_json(vg / "qa_to_region_mapping.json", qa_regions)
    dump_json(vg / "objects.json", objects)
    dump_json(vg / "attributes.json", attributes)
    dump_json(vg / "relationships.json", rels)
    dump_json(root / "truth" / "vg_scene_graphs.json", truth)
    return {"images": cfg.vg_images, "regions": n_regions, "qas": n_qas, "relationships": n_rels}
