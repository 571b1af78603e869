"""The downstream benchmarks: deterministic, in their formats, references true to the hidden truth, and no image
shared with a dataset of the world (own random streams)."""

import hashlib
import json
import re

import pytest

from jade.sampleworld import WorldConfig, caption_matches, write_world
from jade.sampleworld.benchmarks import BenchConfig, ensure_benchmarks, write_benchmarks
from jade.sampleworld.captions import COUNT_WORDS, expressions, scene_captions
from jade.sampleworld.scene import item_rng, make_scene

TINY = dict(test_images=12, caption_train_images=6, region_train_images=6, region_test_images=8)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench"
    write_benchmarks(out, BenchConfig(seed=3, **TINY))
    return out


def _json(p):
    return json.loads(p.read_text())


def test_layout_counts_and_determinism(bench, tmp_path):
    meta = _json(bench / "bench.json")
    assert meta["counts"]["captest"] == {"images": 12, "captions": 60}
    assert set(meta["streams"].values()) == {
        "bench:coco_train",
        "bench:coco_test",
        "bench:refcoco_train",
        "bench:refcoco_test",
    }
    coco = _json(bench / "coco" / "annotations" / "captions_captest.json")
    assert {"images", "annotations"} <= set(coco) and len(coco["images"]) == 12
    for im in coco["images"]:
        assert (bench / "coco" / "images" / "captest" / im["file_name"]).exists()
    write_benchmarks(tmp_path / "again", BenchConfig(seed=3, **TINY))
    for name in ("coco/annotations/captions_captest.json", "refcoco/refs_reftest.json"):
        assert (bench / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    # the same config is not written again; another config replaces the folder
    assert ensure_benchmarks(bench, BenchConfig(seed=3, **TINY)) == meta["counts"]


def test_every_caption_is_complete_and_true(bench):
    coco = _json(bench / "coco" / "annotations" / "captions_captest.json")
    truth = _json(bench / "truth" / "captest_scene_graphs.json")
    by_image = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["caption"])
    for image_id, caps in by_image.items():
        objs = list(truth[str(image_id)]["objects"].values())
        assert len(caps) == 5 and len(set(caps)) >= 3
        for cap in caps:
            # every object named (its colour and shape) and nothing else: one phrase per object
            phrases = re.split(r", | and ", cap.split(": ")[-1].split(" on a ")[0])
            assert len(phrases) == len(objs), cap
            assert all(any(caption_matches(p, o) for o in objs) for p in phrases), cap
            if ":" in cap:
                assert COUNT_WORDS[len(objs)] in cap.split(":")[0]


def test_expressions_single_out_their_object(bench):
    doc = _json(bench / "refcoco" / "refs_reftest.json")
    truth = _json(bench / "truth" / "reftest_scene_graphs.json")
    anns = {a["id"]: a for a in doc["annotations"]}
    assert doc["refs"]
    for image_id, graph in truth.items():  # every object of an image is a candidate, 2 to 4 of them
        mine = [a for a in doc["annotations"] if a["image_id"] == int(image_id)]
        assert len(mine) == len(graph["objects"]) and 2 <= len(mine) <= 4
    for ref in doc["refs"]:
        ann, sent = anns[ref["ann_id"]], ref["sentences"][0]["sent"]
        graph = truth[str(ref["image_id"])]["objects"]
        target = graph[str(ref["ann_id"])]
        assert ann["bbox"] == [target["x"], target["y"], target["w"], target["h"]]
        words = set(sent.removeprefix("the ").removesuffix(" object").split())
        fits = [o for o in graph.values() if words <= {o["name"], *o["attributes"][:2]}]
        assert fits == [target], sent


def test_expressions_of_twins_are_none():
    scene = make_scene(item_rng(0, "t", 0), 128, 2, 2)
    twin = type(scene.objects[0])(**{**vars(scene.objects[0]), "x": 90, "row": "bottom"})
    scene.objects[1] = twin
    assert expressions(scene, twin) == [] and scene_captions(scene, item_rng(0, "t", 1), 5)


def test_no_benchmark_image_is_an_image_of_the_world(bench, tmp_path):
    write_world(
        tmp_path / "w", WorldConfig(seed=3, vg_images=20, gqa_images=20, vqa_train_images=20, cc3m_images=40)
    )

    def hashes(root):
        return {hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.jpg")}

    assert not hashes(bench) & hashes(tmp_path / "w")


def test_config_is_checked():
    with pytest.raises(ValueError, match="bench.test_images"):
        BenchConfig(test_images=0)
