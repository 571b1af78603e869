"""Scenes: placement, truth and rendering agree."""

from __future__ import annotations

import io

from PIL import Image

from jade.sampleworld.scene import (
    COLORS,
    POSITIONS,
    item_rng,
    make_scene,
    object_ids,
    parse_position,
    position_name,
    relations,
    render,
    render_jpeg,
    scene_graph,
)


def _scenes(n=200, size=128):
    return [make_scene(item_rng(0, "test", i), size, 1, 4) for i in range(n)]


def test_positions_round_trip():
    assert len(set(POSITIONS)) == 9
    assert position_name("top", "left") == "top left"
    assert position_name("middle", "center") == "center"
    assert position_name("top", "center") == "top"
    for p in POSITIONS:
        assert position_name(*parse_position(p)) == p


def test_objects_in_distinct_cells_inside_canvas_without_overlap():
    for scene in _scenes():
        objs = scene.objects
        assert 1 <= len(objs) <= 4
        assert len({(o.row, o.col) for o in objs}) == len(objs)
        for o in objs:
            assert 0 <= o.x and o.x + o.w <= scene.image_size and 0 <= o.y and o.y + o.h <= scene.image_size
            assert o.w == o.h == (24 if o.size == "small" else 40)
        for a in objs:
            for b in objs:
                if a is not b:
                    assert a.x + a.w <= b.x or b.x + b.w <= a.x or a.y + a.h <= b.y or b.y + b.h <= a.y


def test_same_rng_same_scene_and_bytes():
    a = make_scene(item_rng(7, "vg", 3))
    b = make_scene(item_rng(7, "vg", 3))
    assert a == b and render_jpeg(a) == render_jpeg(b)
    assert make_scene(item_rng(7, "vg", 4)) != a


def test_render_draws_each_object_in_its_colour_on_a_light_background():
    for scene in _scenes(50):
        img = render(scene)
        assert min(scene.background) >= 200
        for o in scene.objects:
            # a point well inside every shape (the triangle's lower middle)
            px = img.getpixel((o.x + o.w // 2, o.y + (o.h * 2) // 3))
            assert px == COLORS[o.color]
        jpeg = Image.open(io.BytesIO(render_jpeg(scene)))
        assert jpeg.format == "JPEG" and jpeg.size == (scene.image_size,) * 2


def test_relations_are_strict_and_symmetric():
    for scene in _scenes():
        for a in scene.objects:
            for b in scene.objects:
                if a is b:
                    continue
                ab, ba = set(relations(a, b)), set(relations(b, a))
                assert ab  # distinct cells: some relation always holds
                flip = {
                    "to the left of": "to the right of",
                    "to the right of": "to the left of",
                    "above": "below",
                }
                flip["below"] = "above"
                assert {flip[r] for r in ab} == ba


def test_scene_graph_is_gqa_format():
    scene = _scenes(1)[0]
    g = scene_graph(scene, object_ids(100, scene))
    assert set(g) == {"width", "height", "objects"}
    for oid, o in g["objects"].items():
        assert isinstance(oid, str)
        assert list(o) == ["name", "x", "y", "w", "h", "attributes", "relations"]
        assert o["attributes"][0] in COLORS and o["attributes"][2] in POSITIONS
        assert all(set(r) == {"name", "object"} and r["object"] in g["objects"] for r in o["relations"])
