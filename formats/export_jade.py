"""`jade export --format jade`: JADE's CC3M-QA-DC layout, as the README of its release (OPT_Questioner) gives it.

Two folders, one JSON file per image named by its id: ``QA/<img_id>.json`` holds an array of QA objects
(``question`` str, ``answer`` str, ``prob`` float, ``type`` one of what | how | where | who | why | when |
binary, ``object`` [int, int, int, int], ``region_description`` str, ``img_id`` str, ``question_id`` int) and
``DC/<img_id>.json`` an array of dense captions (``object``, ``region_description``). ``img_id`` is
``zlib.crc32(url.encode("utf-8")) & 0xffffffff``; boxes are x1 y1 x2 y2 scaled linearly to 0..224.

What our dataset holds differently, and how it is written (also in the export's card):
- under `generate.condition: type` questions are generated per answer type, not per region, so a QA object has
  no ``object`` and ``region_description`` (writing some region there would claim a link the generator never
  made); under `condition: region` each pair carries the region it was asked about, written as ``object`` (its
  box) and ``region_description`` (its caption), and the JADE type it was asked for, written as ``type``;
- ``prob`` is the published ``qa.score``: the filter model's mean token probability of its answer;
- ``type``, for a pair without a published ``jade_type``, is taken from the question's leading word
  (`jade_type`); ``question_id`` is ``img_id * 1000 + i`` for the image's i-th kept pair (unique while ids
  are);
- an image without a URL takes the crc32 of its key;
- two images whose ids collide (crc32 has 2^32 values: about one pair in 900 among CC3M's 2.8M images, and
  any repeated URL) cannot both have ``QA/<img_id>.json``: the first keeps it, the later one is not written
  and is listed in the card with its key, URL and counts, never dropped silently.

A shard is written in full to ``_staging/<shard>/`` (marked ``staged`` when complete), then each image's two
files are renamed into place. A file already in place that the shard did not put there is a collision; it is
logged to the staging folder before the staged copy is removed, so a shard interrupted anywhere resumes
without losing or doubling an image.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path

from jade.atomic import atomic_write_bytes, atomic_write_json
from jade.models.tasks import JADE_TYPES, jade_type

from .export_common import ExportError, Shard, rows

COLUMNS = ["key", "url", "qa", "regions"]
BOX_SCALE = 224
MAX_PAIRS = 1000  # question_id = img_id * MAX_PAIRS + i


def img_id(url: str | None, key: str) -> int:
    """JADE's image id: ``zlib.crc32(url.encode("utf-8")) & 0xffffffff`` (the key's when there is no URL)."""
    return zlib.crc32((url or key).encode("utf-8")) & 0xFFFFFFFF


def box224(bbox: list[float]) -> list[int]:
    """A box of fractions (x0 y0 x1 y1) as JADE's integers, linearly scaled to 0..224."""
    return [min(max(round(v * BOX_SCALE), 0), BOX_SCALE) for v in bbox]


def pair_type(qa: dict, key: str) -> str:
    """The JADE type of a kept pair: the one it was asked for when the dataset publishes it (`condition:
    region`), else from its leading word (`jade_type`)."""
    asked = qa.get("jade_type")
    if asked is None:
        return jade_type(qa["question"], qa["type"])
    if asked not in JADE_TYPES:
        raise ExportError(
            f"{key}: kept pair {qa['question']!r} has jade_type {asked!r}, not one of JADE's types"
        )
    return asked


def qa_objects(row: dict, image: int) -> list[dict]:
    if len(row["qa"]) > MAX_PAIRS:
        raise ExportError(
            f"{row['key']}: {len(row['qa'])} kept pairs, more than question ids allow ({MAX_PAIRS})"
        )
    out = []
    for i, qa in enumerate(row["qa"]):
        if qa["score"] is None:
            raise ExportError(f"{row['key']}: kept pair {i} has no score (prob)")
        obj = {
            "question": qa["question"],
            "answer": qa["answer"],
            "prob": float(qa["score"]),
            "type": pair_type(qa, row["key"]),
        }
        if (region := qa.get("region")) is not None:  # asked about a region (condition: region)
            obj |= {"object": box224(region["bbox"]), "region_description": region["caption"]}
        out.append(obj | {"img_id": str(image), "question_id": image * MAX_PAIRS + i})
    return out


def dc_objects(row: dict) -> list[dict]:
    return [{"object": box224(r["bbox"]), "region_description": r["caption"]} for r in row["regions"]]


def _dump(path: Path, obj) -> None:
    path.write_bytes(json.dumps(obj, ensure_ascii=False).encode())


class JadeWriter:
    """Writes one shard of the JADE layout under ``out`` (``QA/``, ``DC/``); returns its counts."""

    def __init__(self, out: Path):
        self.out = out
        for sub in ("QA", "DC"):
            (out / sub).mkdir(parents=True, exist_ok=True)

    def __call__(self, shard: Shard) -> dict:
        stage = self.out / "_staging" / shard.name
        if not (stage / "staged").exists():
            self._stage(shard, stage)
        index = json.loads((stage / "index.json").read_text())
        log = stage / "collisions.jsonl"
        for e in index["images"]:
            name = f"{e['img_id']}.json"
            qa_src, dc_src = stage / "QA" / name, stage / "DC" / name
            if qa_src.exists() and (self.out / "QA" / name).exists():  # put there by an earlier shard
                with open(log, "a") as f:
                    f.write(json.dumps(e) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                qa_src.unlink()
                dc_src.unlink(missing_ok=True)
                continue
            for src, sub in ((qa_src, "QA"), (dc_src, "DC")):
                if src.exists():
                    os.replace(src, self.out / sub / name)
        late = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
        collided = _unique(index["collisions"] + late)
        lost = {c["key"] for c in collided}
        written = [e for e in index["images"] if e["key"] not in lost]
        shutil.rmtree(stage)
        return {
            "images": len(written),
            "qa": sum(e["qa"] for e in written),
            "regions": sum(e["regions"] for e in written),
            "collisions": collided,
        }

    def _stage(self, shard: Shard, stage: Path) -> None:
        shutil.rmtree(stage, ignore_errors=True)
        for sub in ("QA", "DC"):
            (stage / sub).mkdir(parents=True)
        owner: dict[int, str] = {}
        images, collisions = [], []
        for row in rows(shard, COLUMNS):
            image = img_id(row["url"], row["key"])
            entry = {
                "key": row["key"],
                "url": row["url"],
                "img_id": image,
                "qa": len(row["qa"]),
                "regions": len(row["regions"]),
            }
            if image in owner:  # two images of this shard share an id
                collisions.append(entry)
                continue
            owner[image] = row["key"]
            images.append(entry)
            _dump(stage / "QA" / f"{image}.json", qa_objects(row, image))
            _dump(stage / "DC" / f"{image}.json", dc_objects(row))
        atomic_write_json(stage / "index.json", {"images": images, "collisions": collisions}, indent=None)
        atomic_write_bytes(stage / "staged", b"")


def _unique(entries: list[dict]) -> list[dict]:
    seen, out = set(), []
    for e in entries:
        if e["key"] not in seen:
            seen.add(e["key"])
            out.append(e)
    return out


CARD = """\
Written as the README of JADE's CC3M-QA-DC release (github.com/johncaged/OPT_Questioner) specifies: `QA/<img_id>.json`
and `DC/<img_id>.json`, one array per image; `img_id = zlib.crc32(url.encode("utf-8")) & 0xffffffff` (of the key
when an image has no URL); boxes `[x1, y1, x2, y2]` as integers scaled linearly to 0..224.

{pairs}
- `prob` is the published `qa.score`: the filter model's mean token probability of its answer.
- `type`{type_source} comes from the question's leading word: what/which -> what, how -> how, where -> where,
  who/whom/whose -> who, why -> why, when -> when, an auxiliary verb (is, are, does, can, ...) -> binary;
  any other opening by our type (yes/no -> binary, number -> how, other -> what).
- `question_id` = `img_id * 1000 + i` for the image's i-th kept pair.
- Every image has both files (an empty array when it has no kept pair or region).
"""
PAIRS_BY_TYPE = """\
- QA objects carry `question`, `answer`, `prob`, `type`, `img_id`, `question_id`. **`object` and
  `region_description` are left out**: this run's generator asked its questions per answer type
  (`yes/no`, `number`, `other`), not about a region, so no question is tied to a box; writing one would
  claim a link the generator never made."""
PAIRS_BY_REGION = """\
- QA objects carry `question`, `answer`, `prob`, `type`, `object`, `region_description`, `img_id`,
  `question_id`. This run's generator asked its questions per region (`generate.condition: region`), each
  about one kept dense caption: `object` is that region's box, `region_description` its caption, and `type`
  the JADE type the question was asked for (the published `jade_type`)."""


def card(region: bool) -> str:
    """The card's section on this layout, for a dataset made under `condition: region` or `type`."""
    if region:
        return CARD.format(pairs=PAIRS_BY_REGION, type_source=", for a pair published without a `jade_type`,")
    return CARD.format(pairs=PAIRS_BY_TYPE, type_source="")
