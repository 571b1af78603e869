"""Every file in tests/fixtures/real-formats (excerpts of the published datasets) loads unchanged, with the
counts it really holds."""

from __future__ import annotations

from jade.formats import gqa, shards, tsv, vg, vqa

VG_REGIONS = [262, 256, 255, 257, 248]
VG_QAS = [91, 165, 141, 156, 168]


def test_every_fixture_file_is_covered(real):
    covered = {
        "README.md",
        "SHA256SUMS",  # the repository's copy: its checksums (tests/formats/test_fixture_copy.py)
        "cc3m/Train_GCC-training.head.tsv",
        "cc3m/Validation_GCC-1.1.0-Validation.head.tsv",
        "cc3m/Image_Labels_Subset_Train_GCC-Labels-training.head.tsv",
        "cc12m/cc12m.head.tsv",
        "gqa/SAMPLE-val_balanced_questions.json",
        "img2dataset/input_cc3m_style_with_header.tsv",
        "img2dataset/webdataset_output/00000.tar",
        "img2dataset/webdataset_output/00000.parquet",
        "img2dataset/webdataset_output/00000_stats.json",
        "img2dataset/parquet_output/00000.parquet",
        "img2dataset/parquet_output/00000_stats.json",
        "vqa_v2/v2_OpenEnded_mscoco_val2014_questions.head.json",
        "vqa_v2/v2_mscoco_val2014_annotations.reconstructed_one_record.json",
    } | {
        f"visual_genome_v1.2/{n}.json"
        for n in (
            "image_data",
            "region_descriptions",
            "question_answers",
            "objects",
            "attributes",
            "relationships",
        )
    }
    present = {str(p.relative_to(real)) for p in real.rglob("*") if p.is_file()}
    assert present <= covered, f"fixture files without a test: {present - covered}"


def test_vg_image_data(real):
    images = list(vg.iter_image_data(str(real / "visual_genome_v1.2/image_data.json")))
    assert [i["image_id"] for i in images] == [1, 2, 3, 4, 5]
    assert images[0] == {
        "image_id": 1,
        "width": 800,
        "height": 600,
        "url": "https://cs.stanford.edu/people/rak248/VG_100K_2/1.jpg",
        "coco_id": None,
        "flickr_id": None,
    }


def test_vg_regions_keyed_by_id(real):
    reader = vg.RegionReader(str(real / "visual_genome_v1.2/region_descriptions.json"))
    rows = list(reader)
    assert [image_id for image_id, _ in rows] == [1, 2, 3, 4, 5]
    assert [len(regions) for _, regions in rows] == VG_REGIONS
    assert rows[0][1][0] == {
        "region_id": 1382,
        "x": 421,
        "y": 57,
        "width": 82,
        "height": 139,
        "phrase": "the clock is green in colour",
    }
    assert rows[0][1][1]["phrase"] == "shade is along the street "  # raw, trailing space kept
    assert reader.stats.regions == sum(VG_REGIONS) and reader.stats.skipped_bad_region == 0


def test_vg_qas_raw_answers(real):
    rows = list(vg.iter_qas(str(real / "visual_genome_v1.2/question_answers.json")))
    assert [len(qas) for _, qas in rows] == VG_QAS
    assert rows[0][1][0] == {"qa_id": 986768, "question": "What color is the clock?", "answer": "Green."}


def test_vg_other_annotation_files(real):
    base = real / "visual_genome_v1.2"
    assert [len(o) for _, o in vg.iter_objects(str(base / "objects.json"))] == [40, 27, 52, 24, 34]
    attrs = list(vg.iter_attributes(str(base / "attributes.json")))
    assert [len(a) for _, a in attrs] == [40, 27, 52, 24, 34]
    assert any("attributes" not in obj for _, objs in attrs for obj in objs)  # missing in the real data
    assert [len(r) for _, r in vg.iter_relationships(str(base / "relationships.json"))] == [
        41,
        23,
        50,
        16,
        28,
    ]


def test_gqa_questions(real):
    reader = gqa.GQAQuestionReader([str(real / "gqa/SAMPLE-val_balanced_questions.json")])
    questions = list(reader)
    assert [q["qid"] for q in questions] == ["00126851", "00137872", "00137901", "00148535", "00155957"]
    assert questions[1] == {
        "qid": "00137872",
        "image_id": "2371269",
        "question": "What is the device on the traffic signal that is on the left side?",
        "answer": "camera",
        "full_answer": "The device is a camera.",
        "types": {"detailed": "categoryRelS", "semantic": "rel", "structural": "query"},
        "annotations": {
            "answer": {"0": "1669822"},
            "question": {"3": "1669822", "6:8": "3855001"},
            "fullAnswer": {"1": "1669822", "4": "1669822"},
        },
    }
    assert reader.stats.questions == 5 and reader.stats.skipped_no_answer == 0
    assert gqa.gqa_image_path("/gqa/images/", "2371269") == "/gqa/images/2371269.jpg"


def test_vqa_questions_and_join(real):
    qpath = str(real / "vqa_v2/v2_OpenEnded_mscoco_val2014_questions.head.json")
    apath = str(real / "vqa_v2/v2_mscoco_val2014_annotations.reconstructed_one_record.json")
    qreader = vqa.VQAQuestionReader(qpath)
    assert len(list(qreader)) == 11 and qreader.data_subtype == "val2014"
    reader = vqa.VQAReader(qpath, apath)
    (row,) = list(reader)
    assert row["question_id"] == 262148000 and row["image_id"] == 262148
    assert row["question"] == "Where is he looking?"
    assert len(row["answers"]) == 10 and row["answers"][2] == "at table"
    assert (row["multiple_choice_answer"], row["answer_type"]) == ("down", "other")
    assert row["question_type"] == "none of the above"
    assert reader.stats.joined == 1 and reader.stats.skipped_no_annotation == 10
    path = vqa.coco_image_path("/coco/images", row["image_id"], row["split"])
    assert path == "/coco/images/COCO_val2014_000000262148.jpg"


def test_cc_tsvs(real):
    rows = list(tsv.iter_tsv(str(real / "cc3m/Train_GCC-training.head.tsv"), "cc3m"))
    assert len(rows) == 5 and rows[0] == (
        "http://lh6.ggpht.com/-IvRtNLNcG8o/TpFyrudaT6I/AAAAAAAAM6o/_11MuAAKalQ/IMG_3422.JPG?imgmax=800",
        "a very typical bus station",
    )
    assert len(list(tsv.iter_tsv(str(real / "cc3m/Validation_GCC-1.1.0-Validation.head.tsv")))) == 5
    labels = list(tsv.iter_tsv(str(real / "cc3m/Image_Labels_Subset_Train_GCC-Labels-training.head.tsv")))
    assert len(labels) == 6 and labels[0][1] == "christmas tree on a black background ."
    cc12m = list(tsv.iter_tsv(str(real / "cc12m/cc12m.head.tsv"), "cc12m"))  # no final newline
    assert len(cc12m) == 5 and cc12m[0][0].startswith("https://chairish-prod")
    assert cc12m[-1] == (
        "https://solarpoweredblonde.com/wp-content/uploads/2019/06/24.jpg",
        "Drone shot of Green Bowl beach and two people on the sand and sea around",
    )
    reader = tsv.TSVReader(str(real / "img2dataset/input_cc3m_style_with_header.tsv"), "cc3m")
    assert [u.rsplit("/", 1)[-1] for u, _ in reader] == [
        "123_456.jpg",
        "208_495.jpg",
        "does_not_exist.jpg",
        "321_421.jpg",
    ]
    assert reader.stats.header_lines == 1


def _check_img2dataset(samples):
    by_key = {s.key: s for s in samples}
    assert sorted(by_key) == ["000000000", "000000001", "000000002", "000000003"]
    failed = by_key["000000002"]
    assert failed.error == "download failed: HTTP Error 404: File not found" and failed.image_bytes is None
    assert failed.caption == "missing image url"
    for key in ("000000000", "000000001", "000000003"):
        sample = by_key[key]
        assert sample.error is None and sample.width == sample.height == 64
        image = shards.decode_sample(sample)
        assert image.size == (64, 64) and image.mode == "RGB"
    assert by_key["000000003"].caption == "a third image"
    assert by_key["000000000"].url == "http://127.0.0.1:18765/123_456.jpg"
    assert by_key["000000001"].meta["original_width"] == 208


def test_img2dataset_webdataset(real):
    (shard,) = shards.list_shards(
        "webdataset", [str(real / "img2dataset/webdataset_output/{00000..00000}.tar")]
    )
    assert shard.shard_id == "00000"
    reader = shards.ShardReader(shard)
    samples = list(reader)
    _check_img2dataset(samples)
    assert reader.stats.ok == 3 and reader.stats.errors == 1 and reader.stats.stats_json_mismatch == 0
    assert isinstance(samples[0].meta["exif"], str)  # exif stays the JSON string img2dataset wrote


def test_img2dataset_parquet(real):
    (shard,) = shards.list_shards("parquet", [str(real / "img2dataset/parquet_output/*.parquet")])
    reader = shards.ShardReader(shard)
    _check_img2dataset(list(reader))
    assert reader.stats.ok == 3 and reader.stats.errors == 1
