"""`jade export --format llava`: LLaVA's conversation JSON, one conversation per image, and the images folder.

Each image is ``{"id": key, "image": path under images/, "conversations": [...]}`` with turns
``{"from": "human" | "gpt", "value": ...}``, the first human turn opening with ``<image>\\n`` (LLaVA's
`llava_instruct_150k.json` / `llava_v1_5_mix665k.json` layout). Its kept pairs come first, one human turn
(the question) and one gpt turn (the answer) each; then its dense captions as grounding turns, in
LLaVA-1.5's region-caption form: "Please provide a short description for this region: [x0,y0,x1,y1]" and the
caption, the box in Shikra's notation (corners as fractions of the image's width and height, three
decimals). A pair asked about a region (`generate.condition: region`) names its region in its human turn,
in the same notation: "<question> (about the region [x0,y0,x1,y1])" (`REGION_QUESTION`); the region's caption is
not in it (it would give the answer away), and is the gpt turn of that box's grounding turn when the region
was kept. An image with neither a kept pair nor a region has no conversation (and is counted).

Written per shard: ``conversations/<shard>.jsonl`` (one conversation a line, as LLaVA-NeXT also reads) and
the shard's images; when every shard is done, ``llava.json`` (one JSON array, as LLaVA's `train.py` reads
``--data_path``) is streamed together from the parts.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path

from PIL import Image

from jade.atomic import atomic_write_bytes

from .export_common import ExportError, Shard, rows

COLUMNS = ["key", "image", "qa", "regions"]
REGION_PROMPT = "Please provide a short description for this region: {box}"
REGION_QUESTION = "{question} (about the region {box})"  # a pair asked about a region (condition: region)
IMAGE_TOKEN = "<image>"
_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}
_SAFE_PART = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")


def box_text(bbox: list[float]) -> str:
    """Shikra's box notation: ``[x0,y0,x1,y1]``, fractions of width and height with three decimals."""
    return "[" + ",".join(f"{min(max(v, 0.0), 1.0):.3f}" for v in bbox) + "]"


def image_ext(data: bytes) -> str:
    with Image.open(io.BytesIO(data)) as img:  # the header only; Pillow's bomb guard applies
        return _EXT.get(img.format or "", "img")


def image_path(key: str, ext: str) -> str:
    """The image's path under images/: the key's own path when every part is a plain name (``cc3m/000010023``
    -> ``cc3m/000010023.jpg``), never anything that could leave the folder (such a key becomes ``_/<sha1 of the key>``)."""
    parts = key.split("/")
    if not all(_SAFE_PART.match(p) and p not in (".", "..") and len(p) < 200 for p in parts):
        parts = ["_", hashlib.sha1(key.encode()).hexdigest()]
    return "/".join(parts) + f".{ext}"


def human_turn(qa: dict) -> str:
    """A kept pair's question as its human turn: a pair asked about a region names the region's box."""
    if (region := qa.get("region")) is None:
        return qa["question"]
    return REGION_QUESTION.format(question=qa["question"], box=box_text(region["bbox"]))


def conversation(row: dict, image: str) -> dict | None:
    turns = []
    for qa in row["qa"]:
        turns += [{"from": "human", "value": human_turn(qa)}, {"from": "gpt", "value": qa["answer"]}]
    for r in row["regions"]:
        prompt = REGION_PROMPT.format(box=box_text(r["bbox"]))
        turns += [{"from": "human", "value": prompt}, {"from": "gpt", "value": r["caption"]}]
    if not turns:
        return None
    turns[0] = {"from": "human", "value": f"{IMAGE_TOKEN}\n{turns[0]['value']}"}
    return {"id": row["key"], "image": image, "conversations": turns}


class LlavaWriter:
    def __init__(self, out: Path):
        self.out = out

    def __call__(self, shard: Shard) -> dict:
        lines, counts = [], {"images": 0, "qa": 0, "regions": 0, "no_turns": 0}
        for row in rows(shard, COLUMNS):
            if row.get("image") is None or not row["image"].get("bytes"):
                raise ExportError(
                    f"{row['key']}: the dataset holds no image bytes (publish.embed_images: false); "
                    "--format llava writes the images folder from them"
                )
            data = row["image"]["bytes"]
            rel = image_path(row["key"], image_ext(data))
            conv = conversation(row, rel)
            if conv is None:
                counts["no_turns"] += 1
                continue
            atomic_write_bytes(self.out / "images" / rel, data)
            lines.append(json.dumps(conv, ensure_ascii=False))
            counts["images"] += 1
            counts["qa"] += len(row["qa"])
            counts["regions"] += len(row["regions"])
        atomic_write_bytes(
            self.out / "conversations" / f"{shard.name}.jsonl", "".join(f"{x}\n" for x in lines).encode()
        )
        return counts

    def finish(self, shards: list[Shard]) -> None:
        """``llava.json``: the parts' conversations in order, as one JSON array, streamed line by line."""
        final = self.out / "llava.json"
        tmp = final.with_name(f".{final.name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("[")
            first = True
            for shard in shards:
                with open(self.out / "conversations" / f"{shard.name}.jsonl", encoding="utf-8") as part:
                    for line in part:
                        f.write(("\n" if first else ",\n") + line.rstrip("\n"))
                        first = False
            f.write("\n]\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)


CARD = """\
LLaVA's conversation layout (`llava.json`: one JSON array, as LLaVA's `train.py --data_path` reads;
`conversations/*.jsonl`: the same conversations one a line, per shard, as LLaVA-NeXT also reads), with
`--image_folder images`. One conversation per image: `{"id": key, "image": path under images/,
"conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", "value": ...}, ...]}`.

- Every kept QA pair is a human turn (the question) and a gpt turn (the answer), in the dataset's order.
- Every kept dense caption is a grounding turn pair after them, in LLaVA-1.5's region-caption form: human
  "Please provide a short description for this region: [x0,y0,x1,y1]", gpt the caption. The box is in
  Shikra's notation: the corners as fractions of the image's width and height (not of a padded square), three
  decimals.
- An image with neither a kept pair nor a region has no conversation and no image file (counted as
  `no_turns`).
- Images are the published bytes, unchanged, named after the key (`cc3m/000010023` -> `cc3m/000010023.jpg`).
"""
REGION_CARD = """\
- This run asked its questions per region (`generate.condition: region`): a pair's human turn names the
  region it was asked about, in the same notation, "<question> (about the region [x0,y0,x1,y1])". The
  region's caption is left out of it (it names what many questions ask, so it would give the answer away);
  it is the gpt turn of the grounding turn pair with the same box. The pair's JADE type is not written
  (the `jade` and `wds` exports carry it)."""
