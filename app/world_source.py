"""The world source of the pretrainer (`jade base`), given to it by the application: an unlimited stream of fresh sample-world scenes with their truth, served
in chunks (`jade base`). Chunk ``c`` covers steps ``c * chunk_steps`` to ``(c + 1) * chunk_steps`` and holds
``chunk_images`` scenes never drawn before, so the model never sees an image twice: it must learn the world,
not the images. A chunk is a pure function of (seed, c), so a resumed run draws what an uninterrupted one
would.

A curriculum sets how many objects a chunk's scenes hold: ``curriculum`` lists ``[from_fraction,
min_objects, max_objects]`` stages; a chunk takes the last stage whose fraction of the run it has reached.
Scenes with one object teach what an object is (its colour, shape, size and place); more objects then teach
which one a phrase means.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict

from PIL import Image

from jade.models.greedy import greedy
from jade.models.pretrain.base import PretrainData, Vocabulary
from jade.models.pretrain.config import WorldSpec
from jade.models.pretrain.task_dense import PROMPT as DESCRIBE
from jade.models.pretrain.task_detect import PROMPT as DETECT
from jade.models.tasks import answer_prompt, box_to_tokens, iou, parse_box
from jade.models.vqa_normalize import normalize_answer
from jade.sampleworld.language import caption_matches, region_phrases, sample_question_records
from jade.sampleworld.scene import COLORS, COLS, POSITIONS, RELATIONS, ROWS, SHAPES, SIZES, parse_position
from jade.sampleworld.stream import corpus, draw

PROBE_STREAM = "probe"  # held-out scenes: the base's own probe questions (never trained on)
# every task prompt of the pretrainer and of the factory's roles, for the tokenizer's corpus
PROMPTS = [
    "objects",
    "locate",
    "describe",
    "none",
    "answer en",
    "dense caption",
    "question yes/no",
    "question number",
    "question other",
    "caption en",
    "match",
    "complete",
]


# the world's words, for the object-aware tasks (the pretrainer imports nothing of the world)
VOCABULARY = Vocabulary(
    colors=tuple(COLORS),
    shapes=SHAPES,
    sizes=SIZES,
    rows=ROWS,
    cols=COLS,
    positions={p: parse_position(p) for p in POSITIONS},
    relations=RELATIONS,
)


def truth_objects(scene) -> list[dict]:
    """A scene's objects in reading order (row by row, left to right) with boxes as fractions."""
    s = scene.image_size
    return [
        {
            "bbox": (o.x / s, o.y / s, (o.x + o.w) / s, (o.y + o.h) / s),
            "color": o.color,
            "shape": o.shape,
            "size": o.size,
            "position": o.position,
        }
        for o in scene.objects
    ]


def scenes_data(drawn: list, image_size: int, seed_text: str, qa_per_image: int) -> PretrainData:
    """PretrainData of streamed scenes: images at the model's size, true QA (the world's templates), region
    phrases over true boxes, and the true objects."""
    data = PretrainData(keys=[], images=[], captions=[], qa=[], regions=[], objects=[], vocab=VOCABULARY)
    for k, d in enumerate(drawn):
        rng = random.Random(f"{seed_text}:{k}")
        objs = truth_objects(d.scene)
        data.keys.append(f"{seed_text}:{k}")
        data.images.append(d.image.resize((image_size, image_size), Image.BICUBIC))
        data.captions.append("")
        data.qa.append(
            [
                {"question": q.question, "answer": q.answer, "template": q.template}
                for q in sample_question_records(d.scene, rng, qa_per_image)
            ]
        )
        data.regions.append(
            [
                {"bbox": t["bbox"], "caption": rng.choice(region_phrases(o, rng))}
                for t, o in zip(objs, d.scene.objects, strict=True)
            ]
        )
        data.objects.append(objs)
    return data


class WorldSource:
    def __init__(self, spec: WorldSpec, steps: int, image_size: int, probe_images: int = 100):
        self.spec, self.steps, self.image_size = spec, steps, image_size
        self.probe_images, self._probe = probe_images, None

    def chunk_of(self, step: int) -> int:
        return step // self.spec.chunk_steps

    def chunk(self, c: int) -> PretrainData:
        lo, hi = self.spec.objects_at(c * self.spec.chunk_steps / max(1, self.steps))
        n = self.spec.chunk_images
        first = self.spec.first_scene + c * n
        drawn = [draw(self.spec.seed, "train", first + k, lo, hi) for k in range(n)]
        # the question draws are keyed by the chunk's place in the whole stream (equal to c in a first stage)
        return scenes_data(
            drawn, self.image_size, f"{self.spec.seed}:train:{first // n}", self.spec.qa_per_image
        )

    def vocab_texts(self) -> list[str]:
        return corpus(self.spec.seed) + PROMPTS

    def probe(self, lm, processor, attention: str) -> dict:
        if self._probe is None:
            self._probe = probe_data(self.spec.seed, self.probe_images, self.image_size)
        return probe(lm, processor, attention, self._probe)


def probe_data(seed: int, images: int, image_size: int, qa_per_image: int = 12) -> PretrainData:
    """Held-out scenes (1 to 4 objects, as the datasets of the world hold) for the base's probes."""
    drawn = [draw(seed, PROBE_STREAM, k, 1, 4) for k in range(images)]
    return scenes_data(drawn, image_size, f"{seed}:probe", qa_per_image)


def probe(lm, processor, attention: str, data: PretrainData, bs: int = 64) -> dict:
    """Greedy scores of ``lm`` on held-out scenes: true templated questions (accuracy per template, beside
    the answer prior: each template's most frequent true answer), detecting each object by its colour and
    shape where that singles it out (box IoU >= 0.5), and describing each true box (the phrase names the object's
    colour and shape, and its size and place when it names any)."""
    qa = [(i, q) for i, qs in enumerate(data.qa) for q in qs]
    answers = greedy(
        lm,
        processor,
        [data.images[i] for i, _ in qa],
        [answer_prompt(q["question"]) for _, q in qa],
        attention,
        8,
        bs,
    )
    right, prior = defaultdict(list), defaultdict(Counter)
    for (_, q), a in zip(qa, answers, strict=True):
        right[q["template"]].append(normalize_answer(a) == normalize_answer(q["answer"]))
        prior[q["template"]][q["answer"]] += 1
    objs = [(i, o) for i, os_ in enumerate(data.objects) for o in os_]
    unique = [
        (i, o)
        for i, o in objs
        if sum(p["color"] == o["color"] and p["shape"] == o["shape"] for p in data.objects[i]) == 1
    ]
    boxes = greedy(
        lm,
        processor,
        [data.images[i] for i, _ in unique],
        [DETECT.format(description=f"{o['color']} {o['shape']}") for _, o in unique],
        attention,
        6,
        bs,
    )
    located = [
        (p := parse_box(b)) is not None and iou(p, o["bbox"]) >= 0.5
        for b, (_, o) in zip(boxes, unique, strict=True)
    ]
    said = greedy(
        lm,
        processor,
        [data.images[i] for i, _ in objs],
        [DESCRIBE.format(box=box_to_tokens(o["bbox"])) for _, o in objs],
        attention,
        10,
        bs,
    )
    described = [
        caption_matches(t, {"name": o["shape"], "attributes": [o["color"], o["size"], o["position"]]})
        for t, (_, o) in zip(said, objs, strict=True)
    ]
    n = sum(len(v) for v in right.values())
    return {
        "qa": sum(sum(v) for v in right.values()) / max(1, n),
        "qa_prior": sum(c.most_common(1)[0][1] for c in prior.values()) / max(1, n),
        "by_template": {t: sum(v) / len(v) for t, v in sorted(right.items())},
        "prior_by_template": {t: c.most_common(1)[0][1] / sum(c.values()) for t, c in sorted(prior.items())},
        "locate": sum(located) / max(1, len(located)),
        "describe": sum(described) / max(1, len(described)),
        "questions": n,
    }
