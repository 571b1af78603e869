"""Streaming JSON: exact error positions, top-level checks, compressed and fsspec inputs, bounded memory."""

from __future__ import annotations

import gzip
import json
import tracemalloc

import pytest

from jade.formats import gqa, vg, vqa
from jade.formats.common import ReadStats, iter_json_items
from jade.formats.errors import FormatError


@pytest.mark.parametrize(
    ("text", "position", "words"),
    [
        (b'[{"a": 1}, {"b": tru}, 3]', 20, "invalid"),
        (b'[{"id": 1, "regions": []}, {"id": 2, "regions": [', 49, "premature EOF"),
        (b'[{"a": 1} {"b": 2}]', 10, "expect"),
        (b'\xef\xbb\xbf  [{"image_id": 7}] x', 23, "trailing garbage"),
    ],
)
def test_malformed_json_names_file_and_byte(tmp_path, text, position, words):
    path = tmp_path / "bad.json"
    path.write_bytes(text)
    with pytest.raises(FormatError) as info:
        list(iter_json_items(str(path)))
    err = info.value
    assert err.path == str(path) and err.position == position
    assert words in err.message and str(path) in str(err) and f"byte {position}" in str(err)


def test_error_deep_in_a_large_file_is_exact(tmp_path):
    records = [
        {"id": i, "regions": [{"region_id": j, "phrase": "a hat " * 5} for j in range(20)]}
        for i in range(3000)
    ]
    data = json.dumps(records).encode()
    at = data.index(b", ", len(data) * 2 // 3)  # several 64 KiB chunks in
    path = tmp_path / "region_descriptions.json"
    path.write_bytes(data[:at] + b"@" + data[at + 1 :])
    reader = vg.RegionReader(str(path))
    seen = 0
    with pytest.raises(FormatError) as info:
        for _ in reader:
            seen += 1
    assert info.value.position == at and seen > 1000  # the good records before it were yielded


def test_wrong_top_level_and_empty(tmp_path):
    (tmp_path / "obj.json").write_bytes(b'  {"id": 1}')
    with pytest.raises(FormatError, match="expected a JSON array") as info:
        list(vg.iter_regions(str(tmp_path / "obj.json")))
    assert info.value.position == 2
    (tmp_path / "arr.json").write_bytes(b"[]")
    with pytest.raises(FormatError, match="expected a JSON object"):
        list(gqa.iter_questions(str(tmp_path / "arr.json")))
    (tmp_path / "empty.json").write_bytes(b"  \n")
    with pytest.raises(FormatError, match="empty JSON document"):
        list(vg.iter_qas(str(tmp_path / "empty.json")))


def test_malformed_vqa_and_gqa(tmp_path):
    text = b'{"data_subtype": "val2014", "questions": [{"image_id": 1,, }]}'
    (tmp_path / "q.json").write_bytes(text)
    with pytest.raises(FormatError) as info:
        list(vqa.iter_vqa_questions(str(tmp_path / "q.json")))
    assert info.value.position == text.index(b",,") + 1
    (tmp_path / "g.json").write_bytes(b'{"001": {"question": "q?", "imageId": "1", "answer": "yes"}, "002": ')
    with pytest.raises(FormatError, match="premature EOF"):
        list(gqa.iter_questions([str(tmp_path / "g.json")]))


def test_gzip_and_file_url(tmp_path, real):
    raw = (real / "visual_genome_v1.2/question_answers.json").read_bytes()
    (tmp_path / "qa.json.gz").write_bytes(gzip.compress(raw))
    rows = list(vg.iter_qas(str(tmp_path / "qa.json.gz")))
    assert [len(q) for _, q in rows] == [91, 165, 141, 156, 168]
    url = "file://" + str(real / "visual_genome_v1.2/image_data.json")
    assert len(list(vg.iter_image_data(url))) == 5


def _write_regions(path, images: int, regions: int) -> int:
    with open(path, "w") as f:
        f.write("[")
        for i in range(images):
            rs = [
                {
                    "region_id": i * regions + j,
                    "width": 10,
                    "height": 12,
                    "image_id": i,
                    "phrase": f"thing {j} " + "x" * 400,
                    "y": j,
                    "x": 2,
                }
                for j in range(regions)
            ]
            f.write(("," if i else "") + json.dumps({"regions": rs, "id": i}))
        f.write("]")
    return path.stat().st_size


def test_regions_stream_with_bounded_memory(tmp_path):
    path = tmp_path / "region_descriptions.json"
    size = _write_regions(path, images=1500, regions=40)  # ~30 MB
    assert size > 25_000_000
    tracemalloc.start()
    try:
        total = 0
        for _, regions in vg.iter_regions(str(path)):
            total += len(regions)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 60_000
    assert peak < size / 20, f"peak {peak} bytes for a {size}-byte file"


def test_read_stats_defaults():
    stats = ReadStats()
    assert stats.skipped_no_answer == 0
    stats.add("skipped_no_answer", 2)
    stats.add("nothing", 0)
    assert stats.skipped_no_answer == 2 and stats.as_dict() == {"skipped_no_answer": 2}
