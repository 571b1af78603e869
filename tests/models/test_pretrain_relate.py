"""The `relate` and `binding` tasks' targets, and a base recipe's later stages: each continues from the stage before (its
weights and tokenizer) on scenes the stages before never drew."""

import json

import yaml
from safetensors.torch import load_file

from jade.app.base import load_recipe, make_base, stage_configs
from jade.app.world_source import VOCABULARY
from jade.models.pretrain.task_binding import binding_questions, relation_questions
from jade.models.pretrain.task_relate import relate_examples, relations
from jade.pipeline.executor import LocalExecutor
from jade.sampleworld.language import answer_question


def _obj(color, shape, position):
    return {
        "bbox": (0.1, 0.1, 0.3, 0.3),
        "color": color,
        "shape": shape,
        "size": "small",
        "position": position,
    }


def test_relate_names_places_and_every_relation_that_holds():
    objects = [
        _obj("red", "circle", "top left"),
        _obj("blue", "square", "bottom right"),
        _obj("green", "circle", "top"),
        _obj("green", "circle", "bottom"),  # not singled out by colour and shape: never named
    ]
    got = dict(relate_examples(objects, VOCABULARY))
    assert got["where red circle"] == "top left" and got["where blue square"] == "bottom right"
    assert got["relate red circle ; blue square"] == "to the left of ; above"
    assert got["relate blue square ; red circle"] == "to the right of ; below"
    assert not any("green" in p for p in got)
    assert len(got) == 4


def test_same_place_on_one_axis_names_only_the_other():
    got = dict(relate_examples([_obj("red", "circle", "left"), _obj("blue", "square", "right")], VOCABULARY))
    assert got["relate red circle ; blue square"] == "to the left of"


def test_binding_asks_the_world_s_own_questions_with_true_answers():
    objects = [
        _obj("red", "circle", "top left"),
        _obj("blue", "square", "bottom right"),
        _obj("red", "square", "center"),
    ]
    got = binding_questions(objects, VOCABULARY)
    graph = {
        "objects": {
            str(i): {
                "name": o["shape"],
                "attributes": [o["color"], o["size"], o["position"]],
                "relations": [
                    {"name": r, "object": str(j)}
                    for j, p in enumerate(objects)
                    if p is not o
                    for r in relations(o, p, VOCABULARY)
                ],
            }
            for i, o in enumerate(objects)
        }
    }
    asked = dict(got)
    assert asked["What color is the circle?"] == "red" and "What color is the square?" not in asked
    assert asked["Where is the blue square?"] == "bottom right"
    assert asked["Is the red circle above the blue square?"] == "yes"
    assert asked["Is the blue square to the left of the red square?"] == "no"
    # the circle by its shape, the blue object by its colour; 3 places; 6 ordered pairs x 4 relations
    assert len(got) == 2 + 3 + 24
    for q, a in got:  # the world's own parser reads each question and agrees
        assert answer_question(q, graph) == a, q
    # the `query` task: the same questions without the relations
    assert binding_questions(objects, VOCABULARY, relate=False) == [
        (q, a) for q, a in got if not q.startswith("Is the")
    ]
    assert len(binding_questions(objects, VOCABULARY, relate=False)) == 2 + 3
    # the `relation` task: yes and no balanced per pair, a side-by-side pair asked about left and right
    rel = relation_questions(objects, VOCABULARY)
    assert sum(a == "yes" for _, a in rel) == sum(a == "no" for _, a in rel)
    for q, a in rel:
        assert answer_question(q, graph) == a, q
    assert ("Is the blue square to the right of the red square?", "yes") in rel
    assert ("Is the blue square to the left of the red square?", "no") in rel


RECIPE = {
    "name": "tiny-base",
    "seed": 0,
    "pretrain": {
        "source": "world",
        "world": {"seed": 0, "chunk_images": 8, "chunk_steps": 2, "qa_per_image": 2},
        "tasks": ["objects", "vqa"],
        "attention": "image",
        "arch": {
            "image_size": 32,
            "patch_size": 16,
            "vision_hidden": 32,
            "vision_layers": 1,
            "text_hidden": 64,
            "text_layers": 1,
            "head_dim": 32,
            "kv_heads": 2,
            "vocab_size": 600,
        },
        "steps": 3,
        "batch_size": 8,
        "min_per_task": 1,
        "probe_images": 4,
        "checkpoint_every": 100,
        "log_every": 100,
    },
    "stages": [
        {"steps": 2, "lr": 0.0005, "tasks": ["objects", "vqa", "relate"], "world": {"qa_per_image": 3}}
    ],
}


def test_stages_continue_on_fresh_scenes(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(RECIPE))
    raw, cfg = load_recipe(path)
    first, second = stage_configs(raw, cfg)
    assert first.world.first_scene == 0 and first.tasks == ["objects", "vqa"]
    # stage 1 drew ceil(3 / 2) = 2 chunks of 8 scenes; stage 2 starts after them, world settings merged
    assert (
        second.world.first_scene == 16 and second.world.qa_per_image == 3 and second.world.chunk_images == 8
    )
    assert second.tasks == ["objects", "vqa", "relate"] and second.lr == 0.0005 and second.steps == 2

    meta = make_base(LocalExecutor(), path, work=tmp_path / "work", out=tmp_path / "out")
    assert meta["steps"] == 5 and meta["stages"] == 2 and meta["examples_seen"] == 5 * 8
    assert [p["step"] for p in meta["probe_curve"]] == [3, 5] and meta["probe_curve"][-1]["stage"] == 2
    # stage 2 kept stage 1's tokenizer and started from its weights (then moved on)
    work = tmp_path / "work"
    for name in ("tokenizer.json", "processor_config.json"):
        assert (work / "processor" / name).read_bytes() == (
            work / "stage-2" / "processor" / name
        ).read_bytes()
    assert json.loads((work / "stage-2" / "checkpoint" / "state.json").read_text())["step"] == 2
    a, b = (load_file(work / d / "checkpoint" / "model.safetensors") for d in (".", "stage-2"))
    assert a.keys() == b.keys() and any(not (a[k] == b[k]).all() for k in a)
    assert "then stage 2" in (tmp_path / "out" / "README.md").read_text()
