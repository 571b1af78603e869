"""Visual Genome 1.2 readers: image metadata, region descriptions, question answers, the QA-to-region mapping,
image files.

All annotation files are top-level JSON arrays with one element per image; they are streamed one image
at a time (region_descriptions.json is ~700 MB). The real files key the image as `id` at the top level of
region_descriptions.json and question_answers.json (the official readme says `image_id`): both are
accepted. Values are passed through raw: phrases and answers ("Green.") are not normalized here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import fsspec

from .common import CountingReader, ReadStats, iter_json_items, iter_json_kvitems, require_dict

__all__ = [
    "IMAGE_FIELDS",
    "IMAGE_SUFFIXES",
    "ImageDataReader",
    "ImageIndex",
    "QAReader",
    "QARegionReader",
    "QA_FIELDS",
    "REGION_FIELDS",
    "RawListReader",
    "RegionReader",
    "iter_attributes",
    "iter_image_data",
    "iter_objects",
    "iter_qa_regions",
    "iter_qas",
    "iter_regions",
    "iter_relationships",
]

REGION_FIELDS = ("region_id", "x", "y", "width", "height", "phrase")
QA_FIELDS = ("qa_id", "question", "answer")
IMAGE_FIELDS = ("image_id", "width", "height", "url", "coco_id", "flickr_id")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _image_id(record: dict) -> Any:
    value = record.get("image_id", record.get("id"))
    return int(value) if isinstance(value, int | float | str) and str(value).isdigit() else value


class _Reader(CountingReader):
    """Base of the VG readers: iterable (re-iterable), counts into `self.stats`."""

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self.stats = ReadStats()

    def _images(self) -> Iterator[tuple[Any, dict]]:
        for index, record in enumerate(iter_json_items(self.path, "item", b"[")):
            require_dict(self.path, record, f"element {index}")
            image_id = _image_id(record)
            if not isinstance(image_id, int):
                self.stats.add("skipped_no_image_id")
                continue
            self.stats.add("images")
            yield image_id, record

    def _iter(self) -> Iterator:
        raise NotImplementedError


class ImageDataReader(_Reader):
    """image_data.json → dicts with image_id, width, height, url, coco_id, flickr_id."""

    def _iter(self) -> Iterator[dict]:
        for image_id, record in self._images():
            out = {key: record.get(key) for key in IMAGE_FIELDS}
            out["image_id"] = image_id
            yield out


class _ListReader(_Reader):
    """Elements holding one list per image (regions, qas): yields (image_id, [normalized dicts])."""

    list_key = ""
    fields: tuple[str, ...] = ()
    item_name = ""

    def _iter(self) -> Iterator[tuple[int, list[dict]]]:
        for image_id, record in self._images():
            items = record.get(self.list_key)
            if not isinstance(items, list):
                self.stats.add(f"skipped_no_{self.list_key}")
                continue
            kept = []
            for item in items:
                if not isinstance(item, dict) or any(item.get(f) is None for f in self.fields):
                    self.stats.add(f"skipped_bad_{self.item_name}")
                    continue
                kept.append({f: item[f] for f in self.fields})
            self.stats.add(self.list_key, len(kept))
            yield image_id, kept


class RegionReader(_ListReader):
    """region_descriptions.json → (image_id, [{region_id, x, y, width, height, phrase}])."""

    list_key, fields, item_name = "regions", REGION_FIELDS, "region"


class QAReader(_ListReader):
    """question_answers.json → (image_id, [{qa_id, question, answer}]), answers raw."""

    list_key, fields, item_name = "qas", QA_FIELDS, "qa"


class RawListReader(_Reader):
    """Any per-image VG file (objects.json, attributes.json, relationships.json, ...) →
    (image_id, the image's list under `list_key`, raw)."""

    def __init__(self, path: str, list_key: str) -> None:
        super().__init__(path)
        self.list_key = list_key

    def _iter(self) -> Iterator[tuple[int, list]]:
        for image_id, record in self._images():
            items = record.get(self.list_key)
            if not isinstance(items, list):
                self.stats.add(f"skipped_no_{self.list_key}")
                continue
            self.stats.add(self.list_key, len(items))
            yield image_id, items


class QARegionReader(CountingReader):
    """qa_to_region_mapping.json (VG 1.2: one JSON object, QA id -> the id of the region the question was
    written about, ``{"21": 11, ...}``) -> (qa_id, region_id) as ints; a pair that is not two integers is
    skipped and counted (`stats.skipped_bad_pair`)."""

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self.stats = ReadStats()

    def _iter(self) -> Iterator[tuple[int, int]]:
        for qa_id, region_id in iter_json_kvitems(self.path, "", b"{"):
            if not str(qa_id).isdigit() or isinstance(region_id, bool) or not isinstance(region_id, int | float):
                self.stats.add("skipped_bad_pair")
                continue
            self.stats.add("pairs")
            yield int(qa_id), int(region_id)


def iter_qa_regions(path: str) -> Iterator[tuple[int, int]]:
    """Stream qa_to_region_mapping.json: (qa_id, region_id)."""
    return iter(QARegionReader(path))


def iter_objects(path: str) -> Iterator[tuple[int, list]]:
    """Stream objects.json: (image_id, raw objects)."""
    return iter(RawListReader(path, "objects"))


def iter_attributes(path: str) -> Iterator[tuple[int, list]]:
    """Stream attributes.json: (image_id, raw objects; `attributes` may be missing in an object)."""
    return iter(RawListReader(path, "attributes"))


def iter_relationships(path: str) -> Iterator[tuple[int, list]]:
    """Stream relationships.json: (image_id, raw relationships)."""
    return iter(RawListReader(path, "relationships"))


def iter_image_data(path: str) -> Iterator[dict]:
    """Stream image_data.json: {image_id, width, height, url, coco_id, flickr_id} per image."""
    return iter(ImageDataReader(path))


def iter_regions(path: str) -> Iterator[tuple[int, list[dict]]]:
    """Stream region_descriptions.json: (image_id, regions); each region has REGION_FIELDS (raw)."""
    return iter(RegionReader(path))


def iter_qas(path: str) -> Iterator[tuple[int, list[dict]]]:
    """Stream question_answers.json: (image_id, qas); each qa has question, answer (raw), qa_id."""
    return iter(QAReader(path))


class ImageIndex:
    """Resolves `{image_id}.jpg` across image folders (VG_100K, VG_100K_2), local or fsspec URLs.

    Each folder is listed once, on first use; the first folder holding an id wins (later duplicates are
    counted in `stats.duplicate_ids`). Returned paths keep the folder's spelling (`s3://...` stays).
    """

    def __init__(self, dirs: str | Iterable[str]) -> None:
        self.dirs = [str(dirs)] if isinstance(dirs, str) else [str(d) for d in dirs]
        self.stats = ReadStats()
        self._index: dict[int, str] | None = None

    def _build(self) -> dict[int, str]:
        index: dict[int, str] = {}
        for folder in self.dirs:
            fs, root = fsspec.core.url_to_fs(folder)
            base = folder.rstrip("/")
            for entry in fs.ls(root, detail=False):
                name = str(entry).rstrip("/").rsplit("/", 1)[-1]
                stem, dot, suffix = name.rpartition(".")
                if not dot or f".{suffix.lower()}" not in IMAGE_SUFFIXES or not stem.isdigit():
                    continue
                image_id = int(stem)
                if image_id in index:
                    self.stats.add("duplicate_ids")
                    continue
                index[image_id] = f"{base}/{name}"
        self.stats.add("images", len(index))
        return index

    @property
    def index(self) -> dict[int, str]:
        if self._index is None:
            self._index = self._build()
        return self._index

    def get(self, image_id: int | str) -> str | None:
        """Path of the image file for `image_id`, or None when no folder holds it."""
        try:
            return self.index.get(int(image_id))
        except (TypeError, ValueError):
            return None

    def __contains__(self, image_id: object) -> bool:
        return self.get(image_id) is not None  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.index)
