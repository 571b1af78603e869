"""The written world: determinism, atomic replacement, consistency of shards and truth, and answers that
the parser confirms from the hidden truth."""

from __future__ import annotations

import hashlib
import json
import tarfile
import time
from collections import Counter
from dataclasses import replace

import pyarrow.parquet as pq
import pytest

from jade.sampleworld import WorldConfig, answer_question, caption_matches, write_world

WORDS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6"}


def _json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def _tree_hash(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def _norm(raw: str) -> str:
    """Enough of VQA answer normalization for the sample world: case, full stop, number words, articles."""
    words = [WORDS.get(w, w) for w in raw.lower().strip().rstrip(".").split() if w not in ("a", "an", "the")]
    return " ".join(words)


def test_default_world_is_deterministic_and_fast(tmp_path):
    t0 = time.perf_counter()
    counts = write_world(tmp_path / "a", WorldConfig())
    elapsed = time.perf_counter() - t0
    assert elapsed < 30, elapsed
    assert counts["vg"]["images"] == 600 and counts["vqa"]["train2014_images"] == 600
    assert counts["cc3m"]["samples"] == 200 and counts["cc3m"]["shards"] == 2
    write_world(tmp_path / "b", WorldConfig())
    assert _tree_hash(tmp_path / "a") == _tree_hash(tmp_path / "b")


def test_other_seed_differs_and_rewrite_replaces(tmp_path, small_cfg):
    out = tmp_path / "w"
    write_world(out, small_cfg)
    first = _tree_hash(out)
    write_world(out, replace(small_cfg, seed=small_cfg.seed + 1))
    assert _tree_hash(out) != first
    assert _json(out / "world.json")["config"]["seed"] == small_cfg.seed + 1
    assert [p.name for p in tmp_path.iterdir()] == ["w"]  # no temporary or old tree left behind


def test_refuses_to_replace_a_foreign_directory(tmp_path, small_cfg):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        write_world(tmp_path / "x", small_cfg)
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["x"]


def test_config_is_validated():
    with pytest.raises(ValueError, match="max_objects"):
        WorldConfig(max_objects=10)
    with pytest.raises(ValueError, match="cc3m_failed_fraction"):
        WorldConfig(cc3m_failed_fraction=2)


def test_world_json(world, small_cfg):
    meta = _json(world / "world.json")
    assert meta["config"]["seed"] == small_cfg.seed
    assert set(meta["counts"]) == {"vg", "gqa", "vqa", "cc3m"}


def test_shards_parquet_and_stats_agree(world):
    truth = _json(world / "truth" / "cc3m_scene_graphs.json")
    all_ok = set()
    for tar_path in sorted((world / "cc3m").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        tar_keys = {n.split(".")[0] for n in members}
        rows = pq.read_table(tar_path.with_suffix(".parquet")).to_pylist()
        stats = _json(tar_path.with_name(tar_path.stem + "_stats.json"))
        ok = {r["key"] for r in rows if r["status"] == "success"}
        failed = [r for r in rows if r["status"] == "failed_to_download"]
        assert ok == tar_keys and not tar_keys & {r["key"] for r in failed}
        assert all(r["error_message"] and r["sha256"] is None and r["width"] is None for r in failed)
        assert stats["count"] == len(rows) == stats["successes"] + stats["failed_to_download"]
        assert stats["successes"] == len(ok) and stats["failed_to_resize"] == 0
        assert sum(stats["status_dict"].values()) == len(rows) and stats["status_dict"].get("success") == len(
            ok
        )
        assert stats["end_time"] - stats["start_time"] == pytest.approx(stats["duration"])
        for r in rows:
            if r["status"] == "success":
                jpg = members[f"{r['key']}.jpg"]
                assert hashlib.sha256(jpg).hexdigest() == r["sha256"]
                assert members[f"{r['key']}.txt"].decode() == r["caption"]
                assert json.loads(members[f"{r['key']}.json"]) == r
                assert r["url"] == f"http://sample-world.invalid/{r['key']}.jpg"
        all_ok |= ok
    assert set(truth) == all_ok
    assert 0 < 90 - len(all_ok) < 30  # ~10% failed in the small world


def test_alt_text_is_noisy_never_a_full_description(world):
    truth = _json(world / "truth" / "cc3m_scene_graphs.json")
    captions = []
    for tar_path in (world / "cc3m").glob("*.tar"):
        with tarfile.open(tar_path) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".txt"):
                    key, text = m.name.split(".")[0], tar.extractfile(m).read().decode()
                    captions.append(text)
                    assert not any(caption_matches(text, o) for o in truth[key]["objects"].values())
    assert len(set(captions)) > len(captions) // 3


def test_vg_answers_are_raw_and_true(world):
    truth = _json(world / "truth" / "vg_scene_graphs.json")
    n = 0
    for rec in _json(world / "vg" / "question_answers.json"):
        for qa in rec["qas"]:
            raw = qa["answer"]
            assert raw[0].isupper() or raw[0].isdigit()
            assert raw.endswith(".")
            assert answer_question(qa["question"], truth[str(rec["id"])]) == _norm(raw)
            n += 1
    assert n == 30 * 6
    regions = _json(world / "vg" / "region_descriptions.json")
    for rec in regions:
        objs = truth[str(rec["id"])]["objects"].values()
        for reg in rec["regions"]:
            assert any(caption_matches(reg["phrase"], o) for o in objs)


def test_gqa_answers_are_true(world):
    truth = _json(world / "truth" / "gqa_scene_graphs.json")
    yes = Counter()
    for split in ("train", "val"):
        for r in _json(world / "gqa" / "questions" / f"{split}_balanced_questions.json").values():
            assert answer_question(r["question"], truth[r["imageId"]]) == r["answer"]
            assert not r["question"].startswith("How many")
            if r["answer"] in ("yes", "no"):
                yes[r["answer"]] += 1
    assert yes["yes"] and yes["no"]
    test = _json(world / "gqa" / "questions" / "test_balanced_questions.json")
    assert all(answer_question(r["question"], truth[r["imageId"]]) is not None for r in test.values())


def test_vqa_answers_are_true_with_noisy_annotators(world):
    wrong = total = variants = 0
    for split, name in (("train2014", "vqa_train"), ("val2014", "vqa_val")):
        truth = _json(world / "truth" / f"{name}_scene_graphs.json")
        q = {
            r["question_id"]: r
            for r in _json(world / "vqa" / f"v2_OpenEnded_mscoco_{split}_questions.json")["questions"]
        }
        for ann in _json(world / "vqa" / f"v2_mscoco_{split}_annotations.json")["annotations"]:
            true = answer_question(q[ann["question_id"]]["question"], truth[str(ann["image_id"])])
            raws = [a["answer"] for a in ann["answers"]]
            assert ann["multiple_choice_answer"] == Counter(raws).most_common(1)[0][0] == true
            wrong += sum(_norm(a) != true for a in raws)
            total += len(raws)
            variants += sum(a != true and _norm(a) == true for a in raws)
    assert 0.04 < wrong / total < 0.16
    assert variants > total // 20  # raw spellings that normalize to the truth
