"""An unlimited stream of fresh sample-world scenes, for pretraining a base model (`jade base`).

Scenes come from their own random streams, ``item_rng(seed, "base:<stream>", index)``, which no dataset
writer uses (they draw from ``vg``, ``gqa``, ``vqa_train``, ``vqa_val`` and ``cc3m``): the base never sees an
image that a dataset of the world holds, in particular none that `jade eval` or `model_accuracy` check.
Images go through the same JPEG encoding (quality 95) as every written dataset, so the base sees the pixels
the factory later reads. :func:`corpus` draws the texts every writer of the world can produce, for a
tokenizer that covers them all.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

from PIL import Image

from .alttext import alt_text
from .language import region_phrases, sample_question_records
from .scene import Scene, item_rng, make_scene, render_jpeg
from .vg import raw_answer


@dataclass
class Drawn:
    """One streamed scene: the image as the datasets hold it (decoded JPEG) and its truth."""

    image: Image.Image
    scene: Scene


def draw(
    seed: int, stream: str, index: int, min_objects: int, max_objects: int, image_size: int = 128
) -> Drawn:
    """Scene ``index`` of ``stream``: the same arguments give the same scene, whatever was drawn before."""
    scene = make_scene(item_rng(seed, f"base:{stream}", index), image_size, min_objects, max_objects)
    with Image.open(io.BytesIO(render_jpeg(scene))) as f:
        return Drawn(f.convert("RGB"), scene)


def corpus(seed: int = 0, scenes: int = 3000) -> list[str]:
    """Texts of the world's language, as its writers produce them: questions and answers (canonical and in
    VG's raw spelling), region phrases and noisy alt-text, over ``scenes`` streamed scenes."""
    texts: list[str] = []
    for i in range(scenes):
        rng = random.Random(f"{seed}:corpus:{i}")
        scene = make_scene(item_rng(seed, "base:corpus", i), 128, 1, 6)
        for qa in sample_question_records(scene, rng, 8):
            texts += [qa.question, qa.answer, raw_answer(qa.answer, qa.qtype, rng)]
        for o in scene.objects:
            texts += region_phrases(o, rng)[:3]
        texts.append(alt_text(scene, rng))
    return texts
