"""Inputs in the published formats, written here (not by the sample world), with every bad case of issue 3.

Each image-shard writer returns the truth: a list of (key, expected) with one entry per input sample, where
`expected` is "ok" or the prefix of the failure reason. The annotation writers produce small VG 1.2, GQA 1.2
and VQA v2 files laid out as published, each naming one image that is not on disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

COLORS = [(200, 30, 30), (30, 160, 40), (40, 60, 210), (220, 200, 20), (120, 40, 160), (20, 180, 190)]


def encode(mode: str = "RGB", size=(40, 30), fmt: str = "JPEG", color=None, **save) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color if color is not None else 0).save(buf, fmt, **save)
    return buf.getvalue()


def palette_png(transparent: bool) -> bytes:
    img = Image.new("P", (20, 20), 1)
    img.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    buf = io.BytesIO()
    img.save(buf, "PNG", **({"transparency": 0} if transparent else {}))
    return buf.getvalue()


def bomb_png() -> bytes:
    """A valid 10000x9000 PNG (11 KB): 90 M pixels, over Pillow's default limit of 89,478,485."""
    assert 10000 * 9000 > Image.MAX_IMAGE_PIXELS
    return encode("1", (10000, 9000), "PNG")


def truncated_jpeg() -> bytes:
    data = encode("RGB", (64, 64), "JPEG", (10, 120, 200), quality=95)
    return data[: len(data) // 2]


# (name, image bytes or None, image extension, caption or None, expected outcome) for one shard's samples.
def image_cases(color: int = 0) -> list[tuple[str, bytes | None, str, str | None, str]]:
    c = COLORS[color % len(COLORS)]
    return [
        ("rgb", encode("RGB", (40, 30), "JPEG", c), "jpg", "a plain photo", "ok"),
        ("cmyk", encode("CMYK", (30, 20), "JPEG", (0, 255, 255, 0)), "jpg", "a cmyk print", "ok"),
        ("palette", palette_png(False), "png", "a palette icon", "ok"),
        ("palette_alpha", palette_png(True), "png", "a palette icon with a hole", "ok"),
        ("grey16", encode("I;16", (20, 24), "PNG", 51200), "png", "a 16-bit scan", "ok"),
        ("rgba", encode("RGBA", (24, 24), "PNG", (0, 0, 255, 128)), "png", "a logo with alpha", "ok"),
        ("la", encode("LA", (16, 16), "PNG", (90, 200)), "png", "grey with alpha", "ok"),
        ("webp", encode("RGB", (32, 32), "WEBP", c), "webp", 'a "quoted" webp caption', "ok"),
        ("corrupt", b"\xff\xd8\xff\xe0 definitely not a jpeg" * 3, "jpg", "garbage bytes", "corrupt image"),
        ("truncated", truncated_jpeg(), "jpg", "half a jpeg", "corrupt image"),
        ("zero", b"", "jpg", "a zero-byte image", "empty image"),
        ("bomb", bomb_png(), "png", "too many pixels", "decompression bomb"),
        ("nocaption", encode("RGB", (20, 20), "JPEG", c), "jpg", None, "missing caption"),
        ("blankcaption", encode("RGB", (20, 20), "JPEG", c), "jpg", "  \n", "missing caption"),
    ]


# ------------------------------------------------------------------------------------ img2dataset webdataset
def _meta(key: str, url: str, caption, status: str, error, image: bytes | None) -> dict:
    width = height = None
    if image and status == "success":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                width, height = Image.open(io.BytesIO(image)).size
        except Exception:  # noqa: BLE001 - a broken image still gets its row
            pass
    return {
        "caption": caption,
        "url": url,
        "key": key,
        "status": status,
        "error_message": error,
        "width": width,
        "height": height,
        "original_width": width,
        "original_height": height,
        "exif": "{}" if status == "success" else None,
        "sha256": hashlib.sha256(image).hexdigest() if image else None,
    }


SIDECAR_SCHEMA = pa.schema(
    [
        ("caption", pa.string()),
        ("url", pa.string()),
        ("key", pa.string()),
        ("status", pa.string()),
        ("error_message", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("original_width", pa.int32()),
        ("original_height", pa.int32()),
        ("exif", pa.string()),
        ("sha256", pa.string()),
    ]
)


def _stats_json(path: Path, rows: list[dict]) -> None:
    status = [r["status"] for r in rows]
    messages: dict[str, int] = {}
    for r in rows:
        label = "success" if r["status"] == "success" else r["error_message"]
        messages[label] = messages.get(label, 0) + 1
    stats = {
        "count": len(rows),
        "successes": status.count("success"),
        "failed_to_download": status.count("failed_to_download"),
        "failed_to_resize": status.count("failed_to_resize"),
        "duration": 1.5,
        "start_time": 1795374727.7,
        "end_time": 1795374729.2,
        "status_dict": messages,
    }
    path.write_text(json.dumps(stats, indent=4))


def _write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1795374727, 0o444
            tar.addfile(info, io.BytesIO(data))


def img2dataset_webdataset(folder: Path, shard: int, seed: int) -> list[tuple[str, str]]:
    """`{shard:05d}.tar` + `.parquet` + `_stats.json` as img2dataset 1.45 writes them, with the bad cases.

    Failed downloads/resizes are only in the parquet; members are shuffled (img2dataset writes in completion
    order; we go further and separate a key's members); one key's members appear twice (a duplicate key).
    """
    cases = image_cases(shard) + [
        ("404", None, "jpg", "a dead link", "download failed"),
        ("resize", None, "jpg", "too small to resize", "resize failed"),
    ]
    members, rows, truth = [], [], []
    for i, (name, image, ext, caption, expected) in enumerate(cases):
        key = f"{shard * 10000 + i:09d}"
        url = f"https://example.com/{shard}/{name}.{ext}"
        if image is None:
            status = "failed_to_download" if name == "404" else "failed_to_resize"
            error = "HTTP Error 404: Not Found" if name == "404" else "image too small"
            rows.append(_meta(key, url, caption, status, error, None))
        else:
            meta = _meta(key, url, caption, "success", None, image)
            rows.append(meta)
            members.append((f"{key}.{ext}", image))
            if caption is not None:
                members.append((f"{key}.txt", caption.encode()))
            members.append((f"{key}.json", json.dumps(meta, indent=4).encode()))
        truth.append((key, expected))
    random.Random(seed).shuffle(members)
    dup = f"{shard * 10000:09d}"  # the first key, again: a second image and caption under the same key
    members += [(f"{dup}.jpg", encode("RGB", (8, 8), "JPEG")), (f"{dup}.txt", b"the same key again")]
    truth.append((dup, "duplicate key"))
    _write_tar(folder / f"{shard:05d}.tar", members)
    pq.write_table(pa.Table.from_pylist(rows, schema=SIDECAR_SCHEMA), folder / f"{shard:05d}.parquet")
    _stats_json(folder / f"{shard:05d}_stats.json", rows)
    return truth


def img2dataset_truncated(folder: Path, shard: int, n: int = 8, cut_in: int = 5) -> list[tuple[str, str]]:
    """An img2dataset shard whose tar was cut short inside the image of sample `cut_in` (an interrupted copy):
    samples before it are usable, that one and every later one (still listed in the parquet) are failures."""
    members, rows, truth = [], [], []
    for i in range(n):
        key = f"{shard * 10000 + i:09d}"
        image = encode("RGB", (48, 48), "JPEG", COLORS[i % len(COLORS)], quality=95)
        meta = _meta(key, f"https://example.com/t/{i}.jpg", f"sample {i}", "success", None, image)
        rows.append(meta)
        members += [
            (f"{key}.jpg", image),
            (f"{key}.txt", f"sample {i}".encode()),
            (f"{key}.json", json.dumps(meta).encode()),
        ]
        truth.append((key, "ok" if i < cut_in else "truncated tar"))
    full = folder / f"{shard:05d}.full"
    _write_tar(full, members)
    with tarfile.open(full) as tar:
        cut = tar.getmember(f"{shard * 10000 + cut_in:09d}.jpg").offset_data + 200
    (folder / f"{shard:05d}.tar").write_bytes(full.read_bytes()[:cut])
    full.unlink()
    pq.write_table(pa.Table.from_pylist(rows, schema=SIDECAR_SCHEMA), folder / f"{shard:05d}.parquet")
    _stats_json(folder / f"{shard:05d}_stats.json", rows)
    return truth


# --------------------------------------------------------------------------------------- generic webdataset
def generic_webdataset(path: Path, seed: int, names: list[str]) -> list[tuple[str, str]]:
    """A webdataset tar without img2dataset metadata: keys from member paths, captions from `.txt` (or a
    `.json` with a caption), extra members (`.cls`) and a stray file, members shuffled."""
    members, truth = [(f"{path.stem}/README", b"not a sample")], []
    for i, (name, image, ext, caption, expected) in enumerate(image_cases(seed)):
        if name not in names:
            continue
        key = f"images/{name}"
        members.append((f"{key}.{ext.upper() if i % 3 == 0 else ext}", image))
        if caption is not None and i % 4 == 1:
            members.append((f"{key}.json", json.dumps({"caption": caption, "source": "crawl"}).encode()))
        elif caption is not None:
            members.append((f"{key}.txt", caption.encode()))
        members.append((f"{key}.cls", str(i).encode()))
        truth.append((key, expected))
    random.Random(seed).shuffle(members)
    _write_tar(path, members)
    return truth


# ------------------------------------------------------------------------------------------ parquet formats
def img2dataset_parquet(folder: Path, shard: int) -> list[tuple[str, str]]:
    """`{shard:05d}.parquet` as img2dataset writes it with --output_format parquet (bytes in `jpg`), plus
    `_stats.json`; failed rows have no image; one key appears twice."""
    cases = image_cases(shard + 2) + [("404", None, "jpg", "a dead link", "download failed")]
    rows, truth = [], []
    for i, (name, image, _, caption, expected) in enumerate(cases):
        key = f"{shard * 10000 + i:09d}"
        status = "success" if image is not None else "failed_to_download"
        meta = _meta(
            key,
            f"https://example.com/p/{name}",
            caption,
            status,
            None if image is not None else "HTTP Error 404: Not Found",
            image,
        )
        rows.append({**meta, "jpg": image})
        truth.append((key, expected))
    rows.append({**rows[0], "caption": "a repeated key", "jpg": encode("RGB", (9, 9), "JPEG")})
    truth.append((rows[0]["key"], "duplicate key"))
    schema = SIDECAR_SCHEMA.append(pa.field("jpg", pa.binary()))
    pq.write_table(
        pa.Table.from_pylist(rows, schema=schema), folder / f"{shard:05d}.parquet", row_group_size=5
    )
    _stats_json(folder / f"{shard:05d}_stats.json", rows[:-1])
    return truth


def hf_image_parquet(path: Path) -> list[tuple[str, str]]:
    """A Hugging Face `datasets` Parquet file with an `Image` column and a `text` column (keys are
    `<file stem>:<row>`); two rows hold only a path (no bytes): one readable, one not."""
    import datasets

    cases = image_cases(4)
    images = [{"bytes": image, "path": f"{name}.{ext}"} for name, image, ext, _, _ in cases]
    texts = [caption for _, _, _, caption, _ in cases]
    truth = [(f"{path.stem}:{i}", expected) for i, (*_, expected) in enumerate(cases)]
    beside = path.with_name("stored-beside.jpg")  # only a path, readable: the image is there
    beside.write_bytes(encode("RGB", (30, 30), "JPEG", COLORS[1]))
    elsewhere = path.with_name("moved-away.jpg")  # exists while writing, deleted after: bytes nowhere
    elsewhere.write_bytes(encode())
    images += [{"bytes": None, "path": str(beside)}, {"bytes": None, "path": str(elsewhere)}]
    texts += ["an image stored beside the file", "an image stored elsewhere"]
    truth += [(f"{path.stem}:{len(cases)}", "ok"), (f"{path.stem}:{len(cases) + 1}", "missing image file")]
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    datasets.Dataset.from_dict({"image": images, "text": texts}, features=features).to_parquet(str(path))
    elsewhere.unlink()
    return truth


# --------------------------------------------------------------------------------------- annotation files
def _jpeg(path: Path, i: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode("RGB", (64, 48), "JPEG", COLORS[i % len(COLORS)]))


def annotations(root: Path) -> dict:
    """VG 1.2, GQA 1.2 and VQA v2 files laid out as published; each names one image missing on disk.

    Returns the manifest `sources` entries and the ids of the missing images.
    """
    vg, gqa, vqa = root / "vg", root / "gqa", root / "vqa"
    vg_ids = [1, 2, 3, 2417890]  # 2417890 is listed but its file is absent
    for n, image_id in enumerate(vg_ids[:3]):
        _jpeg(vg / ("VG_100K" if n < 2 else "VG_100K_2") / f"{image_id}.jpg", n)
    (vg / "image_data.json").write_text(
        json.dumps(
            [
                {
                    "width": 64,
                    "url": f"https://cs.stanford.edu/people/rak248/VG_100K/{i}.jpg",
                    "height": 48,
                    "image_id": i,
                    "coco_id": None,
                    "flickr_id": None,
                }
                for i in vg_ids
            ]
        )
    )
    phrases = ["a red ball", "green grass", "a blue sky", "a yellow car"]
    (vg / "region_descriptions.json").write_text(
        json.dumps(
            [
                {
                    "regions": [
                        {
                            "region_id": i * 10 + j,
                            "width": 20,
                            "height": 16,
                            "image_id": i,
                            "phrase": p,
                            "y": 4 * j,
                            "x": 6 * j,
                        }
                        for j, p in enumerate(phrases)
                    ],
                    "id": i,
                }
                for i in vg_ids
            ]
        )
    )
    (vg / "question_answers.json").write_text(
        json.dumps(
            [
                {
                    "id": i,
                    "qas": [
                        {
                            "a_objects": [],
                            "question": "What color is the ball?",
                            "image_id": i,
                            "qa_id": i * 7,
                            "answer": "Red.",
                            "q_objects": [],
                        },
                        {
                            "a_objects": [],
                            "question": "How many cars are there?",
                            "image_id": i,
                            "qa_id": i * 7 + 1,
                            "answer": "One.",
                            "q_objects": [],
                        },
                    ],
                }
                for i in vg_ids
            ]
        )
    )
    gqa_ids = ["2354786", "n161313", "2375429"]  # n161313: absent
    for n, image_id in enumerate(gqa_ids[::2]):
        _jpeg(gqa / "images" / f"{image_id}.jpg", n)
    questions = {}
    for n, image_id in enumerate(gqa_ids):
        questions[f"{n:08d}"] = {
            "semantic": [],
            "entailed": [],
            "equivalent": [f"{n:08d}"],
            "question": "Is the sky blue?",
            "imageId": image_id,
            "isBalanced": True,
            "groups": {"global": None, "local": "10c-sky_blue"},
            "answer": "yes",
            "semanticStr": "select: sky ->verify color: blue",
            "annotations": {},
            "types": {"structural": "verify", "semantic": "attr", "detailed": "verifyAttr"},
            "fullAnswer": "Yes, the sky is blue.",
        }
    questions["20000000"] = {"question": "What is on the table?", "imageId": "2354786", "isBalanced": True}
    (gqa / "questions").mkdir(parents=True)
    (gqa / "questions" / "train_balanced_questions.json").write_text(json.dumps(questions))
    coco_ids = [9, 25, 30]  # 30: absent
    for n, image_id in enumerate(coco_ids[:2]):
        _jpeg(vqa / "train2014" / f"COCO_train2014_{image_id:012d}.jpg", n)
    qs = [
        {"image_id": i, "question": "What color is the car?", "question_id": i * 1000 + 1} for i in coco_ids
    ]
    anns = [
        {
            "question_type": "what color is the",
            "multiple_choice_answer": "red",
            "answers": [{"answer": "red", "answer_confidence": "yes", "answer_id": k + 1} for k in range(10)],
            "image_id": i,
            "answer_type": "other",
            "question_id": i * 1000 + 1,
        }
        for i in coco_ids
    ]
    head = {
        "info": {"description": "This is v2.0 of the VQA dataset."},
        "license": {"name": "CC BY 4.0"},
        "data_subtype": "train2014",
    }
    (vqa / "v2_OpenEnded_mscoco_train2014_questions.json").write_text(
        json.dumps({**head, "task_type": "Open-Ended", "data_type": "mscoco", "questions": qs})
    )
    (vqa / "v2_mscoco_train2014_annotations.json").write_text(
        json.dumps({**head, "data_type": "mscoco", "annotations": anns})
    )
    sources = {
        "vg": {
            "image_data": str(vg / "image_data.json"),
            "regions": str(vg / "region_descriptions.json"),
            "qas": str(vg / "question_answers.json"),
            "images": [str(vg / "VG_100K"), str(vg / "VG_100K_2")],
        },
        "gqa": {
            "questions": [str(gqa / "questions" / "train_balanced_questions.json")],
            "images": str(gqa / "images"),
        },
        "vqa": {
            "questions": str(vqa / "v2_OpenEnded_mscoco_train2014_questions.json"),
            "annotations": str(vqa / "v2_mscoco_train2014_annotations.json"),
            "images": str(vqa / "train2014"),
        },
    }
    missing = {("vg", "2417890"), ("gqa", "n161313"), ("vqa", "30")}
    return {"sources": sources, "missing": missing}
