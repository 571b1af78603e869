"""Noisy, coarse alt-text for the CC3M-like images, the way web alt-text is: generic ("abstract art
print"), colour-only or shape-only, sometimes with wrong colours, a typo, a stock-site suffix, or
nothing to do with the image ("my new poster!!"). It never describes a scene fully and accurately."""

from __future__ import annotations

import random

from .language import COLOR_NAMES
from .scene import SHAPES, Scene

GENERIC = (
    "colorful geometric shapes on a {bg} background",
    "abstract art print",
    "geometric shapes vector illustration",
    "minimalist geometric poster",
    "simple shapes pattern",
    "modern abstract composition on {bg}",
    "flat design icons",
    "kids learning shapes",
    "abstract background with geometric elements",
    "bauhaus style art",
)
COLOR_ONLY = (
    "{c1} and {c2} shapes",
    "{c1} shapes on {bg}",
    "abstract {c1} and {c2} pattern",
    "{c1} {c2} and {bg} design",
    "{c1} geometric graphic",
)
SHAPE_ONLY = (
    "stock vector illustration of {s}s",
    "{s}s on a {bg} background",
    "set of geometric {s}s",
    "{s} icon",
    "{s}s and {s2}s",
)
UNRELATED = (
    "my new poster!!",
    "check out this design",
    "image may contain: text",
    "cover art for the album",
    "DSC_0042.JPG",
    "wallpaper hd",
    "the best gift for your friends",
    "click here to download",
)
SUFFIXES = (" - stock photo", " royalty free illustration", " | vector art", " stock image", "!")
BG_WORDS = {"white": ("white",), "gray": ("grey", "gray", "white"), "beige": ("beige", "cream", "white")}
BG_WORDS["pale"] = ("light blue", "white", "pale blue")


def _typo(text: str, rng: random.Random) -> str:
    """Swap two neighbouring letters, or drop one, in one longer word."""
    words = text.split(" ")
    long = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not long:
        return text
    i = rng.choice(long)
    w = words[i]
    k = rng.randrange(1, len(w) - 2)
    words[i] = w[:k] + w[k + 1] + w[k] + w[k + 2 :] if rng.random() < 0.6 else w[:k] + w[k + 1 :]
    return " ".join(words)


def alt_text(scene: Scene, rng: random.Random) -> str:
    """One noisy caption for ``scene``."""
    colors = sorted({o.color for o in scene.objects}) or list(COLOR_NAMES)
    shapes = sorted({o.shape for o in scene.objects}) or list(SHAPES)
    absent = [c for c in COLOR_NAMES if c not in colors]
    bg = rng.choice(BG_WORDS[scene.background_name])
    r = rng.random()
    if r < 0.3:
        text = rng.choice(GENERIC).format(bg=bg)
    elif r < 0.55:
        c1, c2 = rng.choice(colors), rng.choice(COLOR_NAMES)
        if rng.random() < 0.25 and absent:  # a wrong colour
            c1 = rng.choice(absent)
        if c2 == c1:
            c2 = rng.choice([c for c in COLOR_NAMES if c != c1])
        text = rng.choice(COLOR_ONLY).format(c1=c1, c2=c2, bg=bg)
    elif r < 0.72:
        s = rng.choice(shapes) if rng.random() < 0.8 else rng.choice(SHAPES)
        s2 = rng.choice([x for x in SHAPES if x != s])
        text = rng.choice(SHAPE_ONLY).format(s=s, s2=s2, bg=bg)
    elif r < 0.85 and absent:
        text = f"{rng.choice(absent)} {rng.choice(SHAPES)} on {bg}"
    else:
        text = rng.choice(UNRELATED)
    if rng.random() < 0.15:
        text += rng.choice(SUFFIXES)
    if rng.random() < 0.12:
        text = _typo(text, rng)
    if rng.random() < 0.2:
        text = text[:1].upper() + text[1:]
    return text
