"""VG / GQA / VQA readers beyond the real excerpts: key variants, skips and counts, image paths."""

from __future__ import annotations

import json

import fsspec
import pytest

from jade.formats import gqa, tsv, vg, vqa


def test_vg_regions_image_id_key_and_bad_regions(tmp_path):
    good = {"region_id": 1, "x": 0, "y": 0, "width": 5, "height": 5, "phrase": "a red ball"}
    data = [
        {"image_id": 7, "regions": [good, {"region_id": 2, "x": 0, "phrase": "no size"}]},
        {"regions": [good]},  # no image id at all
        {"id": "8", "regions": []},
    ]
    (tmp_path / "r.json").write_text(json.dumps(data))
    reader = vg.RegionReader(str(tmp_path / "r.json"))
    assert list(reader) == [(7, [good]), (8, [])]
    assert reader.stats.skipped_bad_region == 1 and reader.stats.skipped_no_image_id == 1


def test_vg_qa_to_region_mapping(tmp_path):
    # qa_to_region_mapping.json as VG 1.2 publishes it: one object, QA id -> region id
    path = tmp_path / "qa_to_region_mapping.json"
    path.write_text('{"21": 11, "22": 12, "x": 3, "23": "twelve", "24": true, "25": 99}')
    reader = vg.QARegionReader(str(path))
    assert list(reader) == [(21, 11), (22, 12), (25, 99)]
    assert reader.stats.pairs == 3 and reader.stats.skipped_bad_pair == 3
    assert dict(vg.iter_qa_regions(str(path))) == {21: 11, 22: 12, 25: 99}


def test_image_index_two_folders(tmp_path):
    for folder, names in {
        "VG_100K": ["1.jpg", "2.jpg", "x.txt"],
        "VG_100K_2": ["2.jpg", "3.jpg", "a.jpg"],
    }.items():
        (tmp_path / folder).mkdir()
        for name in names:
            (tmp_path / folder / name).write_bytes(b"")
    index = vg.ImageIndex([str(tmp_path / "VG_100K"), f"file://{tmp_path}/VG_100K_2/"])
    assert index.get(1) == f"{tmp_path}/VG_100K/1.jpg"
    assert index.get("2") == f"{tmp_path}/VG_100K/2.jpg"  # first folder wins
    assert index.get(3) == f"file://{tmp_path}/VG_100K_2/3.jpg"
    assert index.get(4) is None and index.get("a") is None
    assert len(index) == 3 and index.stats.duplicate_ids == 1


def test_image_index_fsspec_memory():
    fs = fsspec.filesystem("memory")
    fs.pipe("/jade-test-vg/VG_100K/5.jpg", b"x")
    index = vg.ImageIndex("memory://jade-test-vg/VG_100K")
    assert index.get(5) == "memory://jade-test-vg/VG_100K/5.jpg"
    fs.rm("/jade-test-vg", recursive=True)


def test_gqa_chunked_directory_and_missing_answers(tmp_path):
    folder = tmp_path / "train_all_questions"
    folder.mkdir()
    for chunk in (10, 2, 0):
        records = {
            f"{chunk:02d}001": {
                "question": f"q{chunk}?",
                "imageId": f"n{chunk}",
                "answer": "no",
                "fullAnswer": "No.",
            },
            f"{chunk:02d}002": {"question": "test?", "imageId": "n9"},  # test/challenge form: no answer
        }
        (folder / f"train_all_questions_{chunk}.json").write_text(json.dumps(records))
    reader = gqa.GQAQuestionReader([str(folder)])
    questions = list(reader)
    assert [q["qid"] for q in questions] == ["00001", "02001", "10001"]
    assert questions[0]["image_id"] == "n0" and questions[0]["types"] == {}
    assert reader.stats.skipped_no_answer == 3 and reader.stats.files == 3
    glob = list(gqa.iter_questions(f"{folder}/train_all_questions_{{0,2}}.json"))
    assert len(glob) == 2


def test_gqa_scene_graphs(tmp_path):
    graphs = {
        "2370134": {"width": 500, "height": 333, "objects": {"1": {"name": "vase", "relations": []}}},
        "bad": {"width": 1},
    }
    (tmp_path / "sg.json").write_text(json.dumps(graphs))
    reader = gqa.SceneGraphReader(str(tmp_path / "sg.json"))
    assert [(i, g["width"]) for i, g in reader] == [("2370134", 500)]
    assert reader.stats.skipped_bad_record == 1


def test_vqa_join_unsorted_and_orphans(tmp_path):
    questions = {
        "questions": [
            {"image_id": 2, "question": "b?", "question_id": 20},
            {"image_id": 1, "question": "a?", "question_id": 10},
            {"image_id": 3, "question": "c?", "question_id": 30},
        ],
        "data_subtype": "train2014",
    }
    answers = [{"answer": str(i), "answer_confidence": "yes", "answer_id": i} for i in range(1, 11)]
    annotations = {
        "annotations": [
            {
                "question_id": 10,
                "image_id": 1,
                "answers": answers,
                "multiple_choice_answer": "1",
                "answer_type": "number",
                "question_type": "how many",
            },
            {"question_id": 99, "image_id": 9, "answers": answers},
            {"question_id": 20, "image_id": 2, "answers": answers, "answer_type": "yes/no"},
            {"question_id": 20, "image_id": 2, "answers": answers},
        ]
    }
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(annotations))
    reader = vqa.VQAReader(str(tmp_path / "q.json"), str(tmp_path / "a.json"))
    rows = list(reader)
    assert [(r["question_id"], r["image_id"], r["question"]) for r in rows] == [(10, 1, "a?"), (20, 2, "b?")]
    assert rows[0]["answers"] == [str(i) for i in range(1, 11)] and rows[0]["split"] == "train2014"
    stats = reader.stats
    assert (stats.skipped_no_question, stats.skipped_duplicate_annotation, stats.skipped_no_annotation) == (
        1,
        1,
        1,
    )


def test_coco_image_path():
    assert vqa.coco_image_path("/coco/train2014/", 42) == "/coco/train2014/COCO_train2014_000000000042.jpg"
    assert vqa.coco_image_path("s3://b/imgs", 7, "val2014") == "s3://b/imgs/COCO_val2014_000000000007.jpg"
    assert vqa.coco_image_path("/coco/x", 7, "test-dev2015").endswith("COCO_test2015_000000000007.jpg")
    with pytest.raises(ValueError, match="split"):
        vqa.coco_image_path("/coco/images", 7)


def test_tsv_quotes_crlf_and_bad_lines(tmp_path):
    text = 'say "hi\tu1\r\nonly one field\n\n"quoted" end\t u2 \tlabels\nbad \xff utf8\tu3'
    (tmp_path / "x.tsv").write_bytes(text.encode("latin-1"))
    reader = tsv.TSVReader(str(tmp_path / "x.tsv"), "cc3m")
    rows = list(reader)
    assert rows == [("u1", 'say "hi'), ("u2", '"quoted" end'), ("u3", "bad \ufffd utf8")]
    assert reader.stats.skipped_too_few_fields == 1 and reader.stats.lines_with_bad_utf8 == 1
    with pytest.raises(ValueError, match="unknown TSV kind"):
        tsv.TSVReader("x", "cc4m")
