"""Source URL expansion: brace ranges and lists, globs, file:// and fsspec URLs, unmatched patterns."""

from __future__ import annotations

import fsspec
import pytest

from jade.formats.shards import list_shards
from jade.formats.urls import expand_braces, expand_urls


def test_brace_ranges_and_lists():
    assert expand_braces("s/{00000..00002}.tar") == ["s/00000.tar", "s/00001.tar", "s/00002.tar"]
    assert expand_braces("{8..11}") == ["8", "9", "10", "11"]
    assert expand_braces("{3..1}") == ["3", "2", "1"]
    assert expand_braces("{000..010..5}") == ["000", "005", "010"]
    assert expand_braces("{a,b}-{0..1}") == ["a-0", "a-1", "b-0", "b-1"]
    assert expand_braces("x{a,{b,c}}") == ["xa", "xb", "xa", "xc"]  # nested: deduplicated later
    assert expand_braces("keep{me}.tar") == ["keep{me}.tar"]
    assert len(expand_braces("{00000..00331}.tar")) == 332


def _touch(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"x")


def test_expand_globs_braces_file_urls_sorted_dedup(tmp_path):
    _touch(tmp_path, "00002.tar", "00000.tar", "00001.tar", "00000.parquet", "00000_stats.json")
    got = expand_urls(
        [f"{tmp_path}/{{00000..00001}}.tar", f"file://{tmp_path}/*.tar", f"{tmp_path}/00000.tar"]
    )
    assert got == [f"{tmp_path}/0000{i}.tar" for i in range(3)]
    assert expand_urls(f"{tmp_path}/*", suffixes=[".parquet"]) == [f"{tmp_path}/00000.parquet"]
    assert expand_urls(str(tmp_path), suffixes=[".tar"]) == [f"{tmp_path}/0000{i}.tar" for i in range(3)]
    with pytest.raises(IsADirectoryError):
        expand_urls(str(tmp_path))


def test_natural_sort(tmp_path):
    _touch(tmp_path, *(f"train_all_questions_{i}.json" for i in (10, 2, 0, 1)))
    names = [p.rsplit("/", 1)[-1] for p in expand_urls(f"{tmp_path}/*.json")]
    assert names == [f"train_all_questions_{i}.json" for i in (0, 1, 2, 10)]


def test_unmatched_patterns_are_errors_naming_them(tmp_path):
    _touch(tmp_path, "00000.tar")
    pattern = f"{tmp_path}/*.nothing"
    with pytest.raises(FileNotFoundError, match=r"no file matches .*\*\.nothing"):
        expand_urls([pattern])
    with pytest.raises(FileNotFoundError, match="00001.tar"):
        expand_urls([f"{tmp_path}/{{00000..00001}}.tar"])
    with pytest.raises(FileNotFoundError, match="missing.tar"):
        expand_urls([f"{tmp_path}/missing.tar"])


def test_fsspec_memory_urls_and_shard_ids(tmp_path):
    fs = fsspec.filesystem("memory")
    for name in ("00000.tar", "00001.tar", "00000.parquet"):
        fs.pipe(f"/jade-test-urls/cc/{name}", b"x")
    got = expand_urls(["memory://jade-test-urls/cc/{00000..00001}.tar"])
    assert got == ["memory:///jade-test-urls/cc/00000.tar", "memory:///jade-test-urls/cc/00001.tar"]
    shards = list_shards("webdataset", ["memory://jade-test-urls/cc/*"])
    assert [s.shard_id for s in shards] == ["00000", "00001"] and shards[0].format == "webdataset"
    fs.rm("/jade-test-urls", recursive=True)


def test_shard_ids_disambiguate_and_formats(tmp_path):
    _touch(tmp_path / "a", "00000.tar")
    _touch(tmp_path / "b", "00000.tar")
    shards = list_shards("webdataset", [f"{tmp_path}/{{a,b}}/00000.tar"])
    assert [s.shard_id for s in shards] == ["a-00000", "b-00000"]
    with pytest.raises(ValueError, match="unknown shard format"):
        list_shards("zip", [str(tmp_path)])
    with pytest.raises(ValueError, match="not parquet shards"):
        list_shards("parquet", [f"{tmp_path}/a/00000.tar"])
