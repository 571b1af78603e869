"""VQA v2 writer: OpenEnded question files and annotation files (10 simulated annotators per question)
with the published headers, plus COCO-named images (``COCO_{split}_{image_id:012d}.jpg``).

Annotators mostly give the canonical answer; some write a variant that VQA answer normalization maps to
the same answer (``"Two"``, ``"yes."``, ``"a circle"``), and about one in ten gives a wrong answer.
``multiple_choice_answer`` is the most common raw answer, which is always the canonical one here."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

from .files import dump_json, write_bytes
from .language import COLOR_NAMES, VQA_TEMPLATES, sample_questions
from .scene import POSITIONS, SHAPES, SIZES, item_rng, make_scene, object_ids, render_jpeg, scene_graph
from .vg import NUMBER_WORDS

INFO = {
    "description": "This is v2.0 of the VQA dataset.",
    "url": "http://visualqa.org",
    "version": "2.0",
    "year": 2017,
    "contributor": "VQA Team",
    "date_created": "2017-04-26 17:00:44",
}
ANNOTATION_INFO = {k: v for k, v in INFO.items() if k != "date_created"}
LICENSE = {
    "url": "http://creativecommons.org/licenses/by/4.0/",
    "name": "Creative Commons Attribution 4.0 International License",
}
# The VQA v2 question types our templates fall under (the real list has 65; the longest prefix wins).
QUESTION_TYPES = (
    "is there a",
    "are there any",
    "is the",
    "how many",
    "what color is the",
    "what",
    "where is the",
)
FIRST_OBJECT_ID = 5_000_000  # truth object ids: FIRST_OBJECT_ID + 10 * image_id + k
SPLITS = ("train2014", "val2014")


def question_type(question: str) -> str:
    """VQA ``question_type``: the longest known type that the question's first words spell."""
    words = question.lower().rstrip("?").split()
    found = [qt for qt in QUESTION_TYPES if words[: len(qt.split())] == qt.split()]
    return max(found, key=len) if found else "none of the above"


def _variants(answer: str, qtype: str) -> list[str]:
    """Raw spellings that VQA normalization (lowercase, punctuation, number words, articles) maps to ``answer``."""
    out = [answer.capitalize(), answer + "."]
    if qtype == "number" and int(answer) < len(NUMBER_WORDS):
        out = [NUMBER_WORDS[int(answer)], NUMBER_WORDS[int(answer)].capitalize(), answer + "."]
    elif answer in SHAPES:
        out.append(f"a {answer}")
    elif answer in POSITIONS:
        out.append(f"the {answer}")
    return out


def _wrong(answer: str, qtype: str, rng: random.Random) -> str:
    if qtype == "yes/no":
        return "no" if answer == "yes" else "yes"
    if qtype == "number":
        return str(int(answer) + 1 if answer == "0" else int(answer) + rng.choice((-1, 1)))
    vocab = next(v for v in (COLOR_NAMES, SHAPES, SIZES, POSITIONS) if answer in v)
    return rng.choice([v for v in vocab if v != answer])


def annotator_answers(answer: str, qtype: str, rng: random.Random) -> list[dict]:
    """Ten ``{answer, answer_confidence, answer_id}`` dicts, with the canonical answer the strict mode."""
    n_wrong = min(3, sum(rng.random() < 0.1 for _ in range(10)))
    wrong = set(rng.sample(range(10), n_wrong))
    raw = []
    for k in range(10):
        if k in wrong:
            raw.append((_wrong(answer, qtype, rng), rng.choice(("maybe", "no", "yes"))))
        elif rng.random() < 0.7:
            raw.append((answer, "yes" if rng.random() < 0.9 else "maybe"))
        else:
            raw.append((rng.choice(_variants(answer, qtype)), "yes"))
    # Keep the canonical spelling the strict majority: turn variants back into it until it is.
    for k in range(10):
        counts = Counter(a for a, _ in raw)
        if all(counts[answer] > n for a, n in counts.items() if a != answer):
            break
        if k not in wrong and raw[k][0] != answer:
            raw[k] = (answer, raw[k][1])
    return [{"answer": a, "answer_confidence": c, "answer_id": k + 1} for k, (a, c) in enumerate(raw)]


def write_vqa(root: Path, cfg) -> dict:
    """Write ``root/vqa/*.json``, ``root/coco/{train2014,val2014}/`` and the truth; return counts."""
    counts = {}
    n_train = cfg.vqa_train_images
    for split, n, first_image_id in (("train2014", n_train, 1), ("val2014", cfg.vqa_val_images, n_train + 1)):
        name = "vqa_" + split.removesuffix("2014")
        questions, annotations, truth = [], [], {}
        for i in range(n):
            image_id = first_image_id + i
            scene = make_scene(item_rng(cfg.seed, name, i), cfg.image_size, cfg.min_objects, cfg.max_objects)
            write_bytes(root / "coco" / split / f"COCO_{split}_{image_id:012d}.jpg", render_jpeg(scene))
            truth[str(image_id)] = scene_graph(scene, object_ids(FIRST_OBJECT_ID + 10 * image_id, scene))
            rng = item_rng(cfg.seed, name, i, "qa")
            for j, (q, a, t) in enumerate(
                sample_questions(scene, rng, cfg.qas_per_image, templates=VQA_TEMPLATES)
            ):
                qid = image_id * 1000 + j
                questions.append({"image_id": image_id, "question": q, "question_id": qid})
                answers = annotator_answers(a, t, rng)
                annotations.append(
                    {
                        "question_type": question_type(q),
                        "multiple_choice_answer": Counter(x["answer"] for x in answers).most_common(1)[0][0],
                        "answers": answers,
                        "image_id": image_id,
                        "answer_type": t,
                        "question_id": qid,
                    }
                )
        qfile = {
            "info": INFO,
            "task_type": "Open-Ended",
            "data_type": "mscoco",
            "license": LICENSE,
            "data_subtype": split,
            "questions": questions,
        }
        afile = {
            "info": ANNOTATION_INFO,
            "license": LICENSE,
            "data_subtype": split,
            "annotations": annotations,
            "data_type": "mscoco",
        }
        dump_json(root / "vqa" / f"v2_OpenEnded_mscoco_{split}_questions.json", qfile, newline=True)
        dump_json(root / "vqa" / f"v2_mscoco_{split}_annotations.json", afile, newline=True)
        dump_json(root / "truth" / f"{name}_scene_graphs.json", truth)
        counts[f"{split}_images"] = n
        counts[f"{split}_questions"] = len(questions)
    return counts
