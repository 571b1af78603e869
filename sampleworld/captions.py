"""Whole-scene captions and referring expressions derived from a scene's truth: the clean references of the
downstream benchmarks (`sampleworld.benchmarks`), unlike the noisy alt-text of the CC3M-like images.

A scene caption is *complete and correct*: it names every object of the scene with its true colour and
shape, and its size and place where the style includes them. Five styles of one scene differ in what they
add (sizes, places, the object count, the background) and in the order the objects are named, as COCO's five
human captions of one image differ in what they mention. A referring expression names one object by
attributes that single it out in its scene (``the red circle``, ``the triangle``, ``the small blue square``),
as RefCOCO's do.
"""

from __future__ import annotations

import random

from .language import position_phrase
from .scene import Obj, Scene

COUNT_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
BACKGROUND_WORDS = {"white": "white", "gray": "gray", "beige": "beige", "pale": "pale blue"}
# (sizes, places, lead, background, order): the five styles, every one complete
STYLES = (
    (False, False, "", False, "reading"),
    (True, False, "count", False, "reading"),
    (False, True, "", False, "shuffled"),
    (True, True, "", True, "reading"),
    (True, False, "there", True, "shuffled"),
)
# the attribute sets a referring expression may use, shortest first
REFER_KEYS = (("shape",), ("color",), ("color", "shape"), ("size", "shape"), ("size", "color", "shape"))


def _an(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def object_phrase(o: Obj, sizes: bool, places: bool) -> str:
    """``a red circle``, ``a small red circle``, ``a red circle in the top left`` ..."""
    words = ([o.size] if sizes else []) + [o.color, o.shape]
    text = f"{_an(words[0])} {' '.join(words)}"
    return f"{text} {position_phrase(o.position)}" if places else text


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def scene_caption(scene: Scene, style: tuple, rng: random.Random) -> str:
    """One complete caption of ``scene`` in ``style`` (see `STYLES`)."""
    sizes, places, lead, background, order = style
    objs = list(scene.objects)  # reading order
    if order == "shuffled":
        rng.shuffle(objs)
    text = _join([object_phrase(o, sizes, places) for o in objs])
    n = len(objs)
    noun = "shape" if n == 1 else "shapes"
    if lead == "count":
        text = f"{COUNT_WORDS[n]} {noun}: {text}"
    elif lead == "there":
        text = f"there {'is' if n == 1 else 'are'} {COUNT_WORDS[n]} {noun}: {text}"
    if background:
        text += f" on a {BACKGROUND_WORDS[scene.background_name]} background"
    return text


def scene_captions(scene: Scene, rng: random.Random, n: int = 5) -> list[str]:
    """``n`` captions of ``scene``, one per style (cycling when ``n`` exceeds the styles)."""
    return [scene_caption(scene, STYLES[k % len(STYLES)], rng) for k in range(n)]


def _value(o: Obj, key: str) -> str:
    return {"shape": o.shape, "color": o.color, "size": o.size}[key]


def expressions(scene: Scene, o: Obj) -> list[str]:
    """Every referring expression of ``o`` that singles it out in ``scene``, shortest first."""
    out = []
    for keys in REFER_KEYS:
        same = [p for p in scene.objects if all(_value(p, k) == _value(o, k) for k in keys)]
        if len(same) == 1:
            words = [_value(o, k) for k in keys]
            out.append("the " + " ".join(words) + (" object" if keys == ("color",) else ""))
    return out
