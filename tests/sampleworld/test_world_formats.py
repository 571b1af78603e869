"""Every written file has the layout of its real published counterpart in tests/fixtures/real-formats."""

from __future__ import annotations

import json
import tarfile

import pyarrow.parquet as pq


def _json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def _inner_keys(records, field):
    return {tuple(x) for r in records for x in r[field]}


def test_vg_files_match_fixture(world, real):
    for name, field in [
        ("image_data", None),
        ("region_descriptions", "regions"),
        ("question_answers", "qas"),
        ("objects", "objects"),
        ("attributes", "attributes"),
        ("relationships", "relationships"),
    ]:
        ours, theirs = (
            _json(world / "vg" / f"{name}.json"),
            _json(real / "visual_genome_v1.2" / f"{name}.json"),
        )
        assert isinstance(ours, list) and len(ours) == 30
        assert {tuple(r) for r in ours} == {tuple(r) for r in theirs}, name  # same keys, same order
        if field == "attributes":  # real records may lack `attributes`; ours always have it
            assert _inner_keys(ours, field) <= _inner_keys(theirs, field)
        elif field:
            assert _inner_keys(ours, field) == _inner_keys(theirs, field), name
    rel, real_rel = (
        _json(world / "vg" / "relationships.json"),
        _json(real / "visual_genome_v1.2" / "relationships.json"),
    )
    for end in ("subject", "object"):
        assert {tuple(x[end]) for r in rel for x in r["relationships"]} == {
            tuple(x[end]) for r in real_rel for x in r["relationships"]
        }
    # published VG JSON has no final newline; ours neither
    assert not (world / "vg" / "image_data.json").read_bytes().endswith(b"\n")


def test_vg_qa_to_region_mapping(world):
    """qa_to_region_mapping.json: QA id (a string) -> the id of a region of the same image that describes the
    object the question names first (its colour and shape are in the region's phrase)."""
    from jade.sampleworld.scene import COLORS, SHAPES

    mapping = _json(world / "vg" / "qa_to_region_mapping.json")
    regions = {
        r["region_id"]: (img["id"], r["phrase"])
        for img in _json(world / "vg" / "region_descriptions.json")
        for r in img["regions"]
    }
    qas = {qa["qa_id"]: qa for img in _json(world / "vg" / "question_answers.json") for qa in img["qas"]}
    assert mapping and all(k.isdigit() and isinstance(v, int) for k, v in mapping.items())
    assert len(mapping) < len(qas)  # a question naming no object (there is none) has no region
    for qa_id, region_id in mapping.items():
        qa = qas[int(qa_id)]
        image_id, phrase = regions[region_id]
        assert image_id == qa["image_id"]
        q = qa["question"].rstrip("?").lower().split()
        first = next(i for i, w in enumerate(q) if w.rstrip("s") in (*SHAPES, "object"))
        named = [
            w.rstrip("s") for w in q[max(0, first - 1) : first + 1] if w in COLORS or w.rstrip("s") in SHAPES
        ]
        assert all(w in phrase.split() for w in named), (qa["question"], phrase)


def test_vg_images_and_urls(world):
    for rec in _json(world / "vg" / "image_data.json"):
        folder = rec["url"].split("/")[-2]
        assert (world / "vg" / folder / f"{rec['image_id']}.jpg").exists()
        assert rec["width"] == rec["height"] == 128 and rec["coco_id"] is None


def test_gqa_question_records_match_fixture(world, real):
    fixture = _json(real / "gqa" / "SAMPLE-val_balanced_questions.json")
    keys = {tuple(r) for r in fixture.values()}
    assert len(keys) == 1
    for split in ("train", "val", "test"):
        qs = _json(world / "gqa" / "questions" / f"{split}_balanced_questions.json")
        assert qs and all(len(k) == 8 and k.isdigit() for k in qs)
        for r in qs.values():
            want = next(iter(keys))
            if split == "test":
                want = tuple(k for k in want if k not in ("answer", "fullAnswer"))
            assert tuple(r) == want
            assert {tuple(s) for s in r["semantic"]} == {("operation", "dependencies", "argument")}
            assert set(r["annotations"]) == {"answer", "question", "fullAnswer"}
            assert set(r["types"]) == {"detailed", "semantic", "structural"}
            assert (
                isinstance(r["imageId"], str) and (world / "gqa" / "images" / f"{r['imageId']}.jpg").exists()
            )
            if split != "test":
                assert r["answer"] == r["answer"].lower()


def test_gqa_scene_graphs(world):
    for split in ("train", "val"):
        graphs = _json(world / "gqa" / f"{split}_sceneGraphs.json")
        assert graphs
        for g in graphs.values():
            assert set(g) == {"width", "height", "objects"}
            for o in g["objects"].values():
                assert set(o) == {"name", "x", "y", "w", "h", "attributes", "relations"}
                assert isinstance(o["relations"], list)


def test_vqa_files_match_fixture(world, real):
    q_fix = _json(real / "vqa_v2" / "v2_OpenEnded_mscoco_val2014_questions.head.json")
    a_fix = _json(real / "vqa_v2" / "v2_mscoco_val2014_annotations.reconstructed_one_record.json")[
        "annotations"
    ][0]
    for split in ("train2014", "val2014"):
        q = _json(world / "vqa" / f"v2_OpenEnded_mscoco_{split}_questions.json")
        assert list(q) == list(q_fix)
        assert {k: v for k, v in q.items() if k not in ("questions", "data_subtype")} == {
            k: v for k, v in q_fix.items() if k not in ("questions", "data_subtype")
        }
        assert q["data_subtype"] == split
        assert {tuple(r) for r in q["questions"]} == {tuple(r) for r in q_fix["questions"]}
        a = _json(world / "vqa" / f"v2_mscoco_{split}_annotations.json")
        assert list(a) == ["info", "license", "data_subtype", "annotations", "data_type"]
        assert a["license"] == q_fix["license"] and a["data_type"] == "mscoco" and a["data_subtype"] == split
        assert {tuple(r) for r in a["annotations"]} == {tuple(a_fix)}
        assert {tuple(x) for r in a["annotations"] for x in r["answers"]} == {
            tuple(x) for x in a_fix["answers"]
        }
        assert len(a["annotations"]) == len(q["questions"])
        for qq, ann in zip(q["questions"], a["annotations"], strict=True):
            assert qq["question_id"] == ann["question_id"] and qq["question_id"] // 1000 == qq["image_id"]
            assert [x["answer_id"] for x in ann["answers"]] == list(range(1, 11))
            assert ann["answer_type"] in ("yes/no", "number", "other")
            image = world / "coco" / split / f"COCO_{split}_{qq['image_id']:012d}.jpg"
            assert image.exists()


def test_img2dataset_shards_match_fixture(world, real):
    fix_dir = real / "img2dataset" / "webdataset_output"
    fix_tar = tarfile.open(fix_dir / "00000.tar")
    fix_json = json.loads(fix_tar.extractfile("000000000.json").read())
    fix_stats = _json(fix_dir / "00000_stats.json")
    fix_schema = pq.read_schema(fix_dir / "00000.parquet")
    fix_member = fix_tar.getmembers()[0]
    shards = sorted((world / "cc3m").glob("*.tar"))
    assert [p.name for p in shards] == ["00000.tar", "00001.tar", "00002.tar"]
    for tar_path in shards:
        schema = pq.read_schema(tar_path.with_suffix(".parquet"))
        assert [(f.name, f.type) for f in schema] == [(f.name, f.type) for f in fix_schema]
        stats = _json(tar_path.with_name(tar_path.stem + "_stats.json"))
        assert list(stats) == list(fix_stats)
        with tarfile.open(tar_path) as tar:
            assert tar.format == fix_tar.format == tarfile.PAX_FORMAT
            for m in tar.getmembers():
                assert (m.mode, m.uname, m.gname, m.uid) == (
                    fix_member.mode,
                    fix_member.uname,
                    fix_member.gname,
                    fix_member.uid,
                )
                assert "mtime" in m.pax_headers
                key, ext = m.name.split(".")
                assert len(key) == 9 and key.isdigit() and ext in ("jpg", "json", "txt")
                data = tar.extractfile(m).read()
                if ext == "json":
                    meta = json.loads(data)
                    assert list(meta) == list(fix_json)
                    assert isinstance(meta["exif"], str) and meta["key"] == key
                    assert data.decode() == json.dumps(meta, indent=4)
                if ext == "txt":
                    assert not data.endswith(b"\n") and data


def test_tar_members_of_a_sample_are_contiguous_and_sorted(world):
    for tar_path in (world / "cc3m").glob("*.tar"):
        with tarfile.open(tar_path) as tar:
            names = tar.getnames()
        assert len(names) % 3 == 0
        keys = []
        for i in range(0, len(names), 3):
            group = names[i : i + 3]
            key = group[0].split(".")[0]
            assert group == [f"{key}.jpg", f"{key}.json", f"{key}.txt"]
            keys.append(key)
        assert len(set(keys)) == len(keys)
        assert keys != sorted(keys)  # download-completion order, not key order
