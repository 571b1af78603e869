"""GQA 1.2 writer: balanced question files (dicts keyed by zero-padded string ids), scene graphs and
images. Questions are yes/no and open (GQA has no counting); each record carries a functional program
(``semantic`` / ``semanticStr``), token annotations and a full-sentence answer like the real files. The
test split, as published, has no ``answer`` or ``fullAnswer``."""

from __future__ import annotations

from pathlib import Path

from .files import dump_json, write_bytes
from .language import QA, Thing, position_phrase, sample_question_records, things
from .scene import item_rng, make_scene, object_ids, render_jpeg, scene_graph

FIRST_IMAGE_ID = 2_370_001
FIRST_OBJECT_ID = 3_000_000  # object ids: FIRST_OBJECT_ID + 10 * image index + k
GQA_QTYPES = ("yes/no", "other")
# template -> (types.detailed, types.semantic, types.structural)
TYPES = {
    "exist_cs": ("existAttr", "attr", "verify"),
    "exist_s": ("exist", "obj", "verify"),
    "verify_color": ("verifyAttr", "attr", "verify"),
    "relation": ("relVerify", "rel", "verify"),
    "query_color": ("queryAttr", "attr", "query"),
    "query_shape": ("categoryAttr", "cat", "query"),
    "query_size": ("queryAttr", "attr", "query"),
    "query_position": ("positionQuery", "attr", "query"),
}


def split_sizes(n: int) -> dict[str, int]:
    """Images per split: about 85% train, 10% val, 5% test (each at least one when n >= 3)."""
    val = max(1, n // 10) if n >= 3 else 0
    test = max(1, n // 20) if n >= 3 else 0
    return {"train": n - val - test, "val": val, "test": test}


def _arg(name: str, ts) -> str:
    return f"{name} ({','.join(t.id for t in ts) or '-'})"


def _program(qa: QA, ts: list[Thing]) -> list[tuple[str, str]]:
    """The GQA-style functional program of a question: ``[(operation, argument), ...]`` as a chain."""
    s, c = qa.slots.get("shape"), qa.slots.get("color")
    of_shape = [t for t in ts if t.shape == s]
    t = qa.template
    if t == "exist_cs":
        return [("select", _arg(s, of_shape)), ("filter color", c), ("exist", "?")]
    if t == "exist_s":
        return [("select", _arg(s, of_shape)), ("exist", "?")]
    if t == "verify_color":
        return [("select", _arg(s, qa.refs)), ("verify color", c)]
    if t == "relation":
        a, b = qa.refs
        rel = f"{qa.slots['shape2']},{qa.slots['relation']},o ({b.id})"
        return [("select", _arg(s, [a])), ("filter color", c), ("verify rel", rel)]
    if t == "query_color":
        return [("select", _arg(s, qa.refs)), ("query", "color")]
    if t == "query_shape":
        return [("select", _arg("object", qa.refs)), ("filter color", c), ("query", "name")]
    attr = "size" if t == "query_size" else "position"
    return [("select", _arg(s, qa.refs)), ("filter color", c), ("query", attr)]


def _full_answer(qa: QA) -> str:
    sl, a = qa.slots, qa.answer
    desc = f"{sl['color']} {sl['shape']}" if "color" in sl and "shape" in sl else sl.get("shape")
    t = qa.template
    if t == "exist_cs" or t == "exist_s":
        article = "an" if desc[0] in "aeiou" else "a"
        return f"Yes, there is {article} {desc}." if a == "yes" else f"No, there are no {desc}s."
    if t == "verify_color":
        return (
            f"Yes, the {sl['shape']} is {sl['color']}."
            if a == "yes"
            else f"No, the {sl['shape']} is {qa.refs[0].color}."
        )
    if t == "relation":
        other = f"the {sl['color2']} {sl['shape2']}"
        true = sorted(n for n, o in qa.refs[0].rels if o == qa.refs[1].id)
        rel = sl["relation"] if a == "yes" else true[0]
        return f"{'Yes' if a == 'yes' else 'No'}, the {desc} is {rel} {other}."
    if t == "query_color":
        return f"The {sl['shape']} is {a}."
    if t == "query_shape":
        return f"The {sl['color']} object is a {a}."
    if t == "query_position":
        return f"The {desc} is {position_phrase(a)}."
    return f"The {desc} is {a}."


def _token_refs(text: str, qa: QA) -> dict[str, str]:
    """GQA ``annotations``: token index (of the words without punctuation) -> id of the object named there."""
    words = [w.strip("?.,").lower() for w in text.split()]
    out, start = {}, 0
    for ref in qa.refs[:2]:
        noun = "object" if qa.template == "query_shape" else ref.shape
        for i in range(start, len(words)):
            if words[i] in (noun, noun + "s"):
                out[str(i)] = ref.id
                start = i + 1
                break
    return out


def question_record(qid: str, image_id: str, qa: QA, ts: list[Thing], with_answer: bool = True) -> dict:
    """One record of a ``*_balanced_questions.json`` file, with the fixture's key order."""
    prog = _program(qa, ts)
    semantic = [
        {"operation": op, "dependencies": [k - 1] if k else [], "argument": arg}
        for k, (op, arg) in enumerate(prog)
    ]
    semantic_str = "->".join(
        f"{d['operation']}: {d['argument']}" + (f" {d['dependencies']}" if d["dependencies"] else "")
        for d in semantic
    )
    full = _full_answer(qa)
    detailed, sem, structural = TYPES[qa.template]
    query = qa.template.startswith("query_")
    rec = {
        "semantic": semantic,
        "entailed": [],
        "equivalent": [qid],
        "question": qa.question,
        "imageId": image_id,
        "isBalanced": True,
        "groups": {
            "global": qa.template.removeprefix("query_") if query else None,
            "local": f"{len(prog)}-{qa.slots.get('shape', 'object')}_{qa.template}",
        },
        "answer": qa.answer,
        "semanticStr": semantic_str,
        "annotations": {
            "answer": {"0": qa.refs[0].id} if qa.template == "query_shape" and with_answer else {},
            "question": _token_refs(qa.question, qa),
            "fullAnswer": _token_refs(full, qa) if with_answer else {},
        },
        "types": {"detailed": detailed, "semantic": sem, "structural": structural},
        "fullAnswer": full,
    }
    if not with_answer:
        del rec["answer"], rec["fullAnswer"]
    return rec


def write_gqa(root: Path, cfg) -> dict:
    """Write ``root/gqa/...`` and ``root/truth/gqa_scene_graphs.json``; return counts."""
    gqa = root / "gqa"
    sizes = split_sizes(cfg.gqa_images)
    questions = {split: {} for split in sizes}
    graphs = {split: {} for split in sizes}
    i = 0
    for split, n in sizes.items():
        for _ in range(n):
            image_id = str(FIRST_IMAGE_ID + i)
            scene = make_scene(item_rng(cfg.seed, "gqa", i), cfg.image_size, cfg.min_objects, cfg.max_objects)
            write_bytes(gqa / "images" / f"{image_id}.jpg", render_jpeg(scene))
            graph = scene_graph(scene, object_ids(FIRST_OBJECT_ID + 10 * i, scene))
            graphs[split][image_id] = graph
            ts = things(graph)
            rng = item_rng(cfg.seed, "gqa", i, "qa")
            for j, qa in enumerate(sample_question_records(graph, rng, cfg.qas_per_image, GQA_QTYPES)):
                qid = f"{i * cfg.qas_per_image + j:08d}"
                questions[split][qid] = question_record(qid, image_id, qa, ts, with_answer=split != "test")
            i += 1
    for split, recs in questions.items():
        dump_json(gqa / "questions" / f"{split}_balanced_questions.json", recs, newline=True)
    dump_json(gqa / "train_sceneGraphs.json", graphs["train"])
    dump_json(gqa / "val_sceneGraphs.json", graphs["val"])
    dump_json(root / "truth" / "gqa_scene_graphs.json", {k: v for g in graphs.values() for k, v in g.items()})
    counts = {f"{split}_images": n for split, n in sizes.items()}
    counts.update({f"{split}_questions": len(q) for split, q in questions.items()})
    return counts
