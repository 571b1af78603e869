"""Shard readers on damaged and unusual input: every sample comes out once, usable or with a reason."""

from __future__ import annotations

import os
import tarfile

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jade.formats.errors import FormatError
from jade.formats.shards import ShardReader, ShardRef, decode_sample, iter_shard, list_shards


def _shard(path, fmt="webdataset"):
    return ShardRef(os.path.basename(str(path)).split(".")[0], str(path), fmt)


def _by_key(shard):
    samples = list(iter_shard(shard))
    by_key = {}
    for s in samples:
        by_key.setdefault(s.key, []).append(s)
    return samples, by_key


def test_generic_tar_members_out_of_order(tmp_path, encode_image, build_tar):
    jpg, png = encode_image(), encode_image("RGB", (3, 3), "PNG")
    path = build_tar(
        tmp_path / "00007.tar",
        [
            ("a.jpg", jpg),
            ("b.txt", b"caption b\n"),
            ("c.png", png),
            ("./b.jpg", jpg),
            ("dir/d.jpg", jpg),
            ("c.txt", b"caption c"),
            ("a.txt", b'a "quoted" caption'),
            ("dir/d.txt", b"caption d"),
        ],
    )
    samples, by_key = _by_key(_shard(path))
    assert [s.key for s in samples] == ["a", "b", "c", "dir/d"]  # order of first appearance
    assert all(s.error is None for s in samples)
    assert by_key["a"][0].caption == 'a "quoted" caption' and by_key["b"][0].caption == "caption b"
    assert by_key["c"][0].meta["image_ext"] == "png" and by_key["c"][0].image_bytes == png
    image = decode_sample(by_key["c"][0])
    assert image.size == (3, 3) and by_key["c"][0].width == 3 and by_key["c"][0].meta["source_mode"] == "RGB"


def test_bad_members(tmp_path, encode_image, build_tar):
    jpg = encode_image()
    path = build_tar(
        tmp_path / "00001.tar",
        [
            ("zero.jpg", b""),
            ("zero.txt", b"empty image"),
            ("nocap.jpg", jpg),
            ("blank.jpg", jpg),
            ("blank.txt", b"  \n"),
            ("noimg.txt", b"caption only"),
            ("dup.jpg", jpg),
            ("dup.txt", b"first"),
            ("dup.jpg", jpg),
            ("dup.txt", b"second"),
            ("corrupt.jpg", jpg[:40] + b"\0" * 10),
            ("corrupt.txt", b"broken bytes"),
            ("../../escape.jpg", jpg),
            ("../../escape.txt", b"names are only keys"),
            ("README", b"no extension: not a sample member"),
        ],
    )
    reader = ShardReader(_shard(path))
    samples = list(reader)
    errors = {s.key: s.error for s in samples if s.error}
    assert errors == {
        "zero": "empty image",
        "nocap": "missing caption",
        "blank": "missing caption",
        "noimg": "missing image",
        "dup": "duplicate key",
    }
    assert [s.key for s in samples].count("dup") == 2 and next(
        s for s in samples if s.key == "dup"
    ).caption == "first"
    corrupt = next(s for s in samples if s.key == "corrupt")
    assert decode_sample(corrupt) is None and corrupt.error.startswith("corrupt image")
    assert not (tmp_path.parent / "escape.jpg").exists() and any(s.key == "../../escape" for s in samples)
    assert reader.stats.skipped_unnamed_members == 1 and reader.stats.samples == len(samples) == 8


def test_truncated_tar_without_sidecar(tmp_path, encode_image, build_tar):
    jpg = encode_image("RGB", (32, 32), "JPEG", (5, 5, 5))
    members = [
        (f"{i:03d}.{ext}", jpg if ext == "jpg" else b"cap") for i in range(4) for ext in ("jpg", "txt")
    ]
    full = build_tar(tmp_path / "full.tar", members)
    with tarfile.open(full) as tar:
        cut = tar.getmember("002.jpg").offset_data + 100  # inside the third image's data
    (tmp_path / "00003.tar").write_bytes(full.read_bytes()[:cut])
    reader = ShardReader(_shard(tmp_path / "00003.tar"))
    samples = list(reader)
    assert [(s.key, s.error is None) for s in samples[:2]] == [("000", True), ("001", True)]
    bad = [s for s in samples if s.error]
    assert {s.key for s in bad} == {"002", "00003:truncated"}
    assert all(s.error.startswith("truncated tar: ") for s in bad)
    assert reader.stats.damaged_shards == 1


def test_truncated_at_member_boundary_and_garbage(tmp_path, encode_image, build_tar):
    full = build_tar(tmp_path / "full.tar", [("a.jpg", encode_image()), ("a.txt", b"cap")]).read_bytes()
    end = full.rindex(b"cap") + 512  # just after the last member's data block
    (tmp_path / "00004.tar").write_bytes(full[:end])
    samples, by_key = _by_key(_shard(tmp_path / "00004.tar"))
    # the last key may have lost members with the missing tail: recorded as truncated, not kept
    assert [s.key for s in samples] == ["a", "00004:truncated"]
    assert all(s.error.startswith("truncated tar: no end-of-archive marker") for s in samples)
    (tmp_path / "00005.tar").write_bytes(b"this is not a tar file at all" * 40)
    samples, _ = _by_key(_shard(tmp_path / "00005.tar"))
    assert [(s.key, s.error.split(":")[0]) for s in samples] == [("00005:unreadable", "unreadable tar")]


def test_img2dataset_sidecar_lists_failures_and_lost_keys(tmp_path, real, build_tar, encode_image):
    src = real / "img2dataset/webdataset_output"
    (tmp_path / "00000.parquet").write_bytes((src / "00000.parquet").read_bytes())
    full = (src / "00000.tar").read_bytes()
    cut = full.index(b"a third image") - 1500  # inside 000000003's members
    (tmp_path / "00000.tar").write_bytes(full[:cut])
    samples, by_key = _by_key(_shard(tmp_path / "00000.tar"))
    assert len(samples) == 4 and "00000:truncated" not in by_key  # the sidecar names what was lost
    assert by_key["000000000"][0].error is None and by_key["000000001"][0].error is None
    assert by_key["000000003"][0].error.startswith("truncated tar: ")
    assert by_key["000000002"][0].error == "download failed: HTTP Error 404: File not found"


def test_parquet_rows(tmp_path, encode_image):
    jpg = encode_image()
    table = pa.table(
        {
            "key": ["k0", "k1", "k1", "k2", "k3", "k4"],
            "caption": ["a cat", "a dog", "again", None, "failed", "empty"],
            "url": ["u0", "u1", "u1", "u2", "u3", "u4"],
            "status": ["success", "success", "success", "success", "failed_to_resize", "success"],
            "error_message": [None, None, None, None, "too small", None],
            "jpg": [jpg, jpg, jpg, jpg, None, b""],
        }
    )
    pq.write_table(table, tmp_path / "00009.parquet")
    (shard,) = list_shards("parquet", [str(tmp_path / "*.parquet")])
    errors = [(s.key, s.error) for s in iter_shard(shard)]
    assert errors == [
        ("k0", None),
        ("k1", None),
        ("k1", "duplicate key"),
        ("k2", "missing caption"),
        ("k3", "resize failed: too small"),
        ("k4", "empty image"),
    ]


def test_hugging_face_image_parquet(tmp_path, encode_image, monkeypatch):
    datasets = pytest.importorskip("datasets")
    png = encode_image("RGBA", (4, 5), "PNG", (1, 2, 3, 128))
    features = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    elsewhere = tmp_path / "elsewhere.png"
    elsewhere.write_bytes(png)
    monkeypatch.chdir(tmp_path)  # `datasets` sizes relative paths from the working directory
    (tmp_path / "gone.png").write_bytes(png)
    data = {
        "image": [
            {"bytes": png, "path": None},
            {"bytes": None, "path": str(elsewhere)},
            {"bytes": None, "path": "gone.png"},
        ],
        "text": ["hi", "x", "y"],
    }
    datasets.Dataset.from_dict(data, features=features).to_parquet(str(tmp_path / "train-00000.parquet"))
    (tmp_path / "gone.png").unlink()
    (shard,) = list_shards("parquet", [str(tmp_path / "*.parquet")])
    samples = list(iter_shard(shard))
    assert [(s.key, s.caption) for s in samples] == [
        ("train-00000:0", "hi"),
        ("train-00000:1", "x"),
        ("train-00000:2", "y"),
    ]
    assert samples[0].error is None and decode_sample(samples[0]).size == (4, 5)
    assert samples[0].meta["source_mode"] == "RGBA"
    assert samples[1].error is None and samples[1].image_bytes == png  # only a path: read from there
    assert samples[2].error.startswith("missing image file: no bytes, and 'gone.png' cannot be read")


def test_parquet_damage(tmp_path):
    pq.write_table(pa.table({"key": ["a"], "caption": ["c"]}), tmp_path / "noimage.parquet")
    with pytest.raises(FormatError, match="no image column"):
        list(iter_shard(_shard(tmp_path / "noimage.parquet", "parquet")))
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    (sample,) = list(iter_shard(_shard(tmp_path / "broken.parquet", "parquet")))
    assert sample.key == "broken:unreadable" and sample.error.startswith("unreadable parquet")


def test_tar_over_fsspec_memory(real):
    fs = fsspec.filesystem("memory")
    src = real / "img2dataset/webdataset_output"
    for name in ("00000.tar", "00000.parquet", "00000_stats.json"):
        fs.pipe(f"/jade-test-shards/{name}", (src / name).read_bytes())
    (shard,) = list_shards("webdataset", ["memory://jade-test-shards/{00000..00000}.tar"])
    reader = ShardReader(shard)
    assert sorted((s.key, s.error is None) for s in reader) == [
        ("000000000", True),
        ("000000001", True),
        ("000000002", False),
        ("000000003", True),
    ]
    assert reader.stats.stats_json_mismatch == 0
    fs.rm("/jade-test-shards", recursive=True)
