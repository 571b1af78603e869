"""Scenes of the sample world: a few coloured shapes on a 3x3 grid, their rendering and their truth.

A scene is drawn from one seeded ``random.Random`` (see :func:`item_rng`), so every image of every
dataset can be rebuilt on its own from ``(seed, dataset, index)``. Objects sit in distinct grid cells and
never overlap; the truth of a scene is written in GQA scene-graph format (:func:`scene_graph`).
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

__all__ = [
    "BACKGROUNDS",
    "COLORS",
    "COLS",
    "JPEG_QUALITY",
    "Obj",
    "POSITIONS",
    "RELATIONS",
    "ROWS",
    "SHAPES",
    "SIZES",
    "SIZE_FRACTION",
    "Scene",
    "item_rng",
    "make_scene",
    "object_ids",
    "parse_position",
    "position_name",
    "relations",
    "render",
    "render_jpeg",
    "scene_graph",
]

SHAPES = ("circle", "square", "triangle")
# Saturated colours, far from every background tone below.
COLORS = {
    "red": (214, 32, 39),
    "green": (34, 150, 60),
    "blue": (30, 80, 210),
    "yellow": (245, 205, 20),
    "purple": (125, 45, 165),
    "orange": (245, 125, 20),
}
SIZES = ("small", "large")
SIZE_FRACTION = {"small": 0.19, "large": 0.31}
ROWS = ("top", "middle", "bottom")
COLS = ("left", "center", "right")
# Light background tones (near-white, light gray, beige, pale blue-gray), jittered per image.
BACKGROUNDS = {
    "white": (246, 246, 244),
    "gray": (222, 222, 222),
    "beige": (240, 232, 212),
    "pale": (228, 234, 240),
}
RELATIONS = ("to the left of", "to the right of", "above", "below")
JPEG_QUALITY = 95


def position_name(row: str, col: str) -> str:
    """Name of a grid cell: ``("top", "left") -> "top left"``, ``("middle", "center") -> "center"``."""
    if row == "middle":
        return col
    if col == "center":
        return row
    return f"{row} {col}"


POSITIONS = tuple(position_name(r, c) for r in ROWS for c in COLS)


def parse_position(name: str) -> tuple[str, str]:
    """Inverse of :func:`position_name`: ``"top" -> ("top", "center")``, ``"left" -> ("middle", "left")``."""
    for r in ROWS:
        for c in COLS:
            if position_name(r, c) == name:
                return r, c
    raise ValueError(f"not a position name: {name!r}")


def item_rng(seed: int, dataset: str, index: int, purpose: str = "") -> random.Random:
    """The random stream of one item, independent of every other item and of global state."""
    return random.Random(f"{seed}:{dataset}:{index}" + (f":{purpose}" if purpose else ""))


@dataclass(frozen=True)
class Obj:
    """One drawn shape; ``x, y, w, h`` is the integer pixel extent of what is drawn."""

    shape: str
    color: str
    size: str
    row: str
    col: str
    x: int
    y: int
    w: int
    h: int

    @property
    def position(self) -> str:
        return position_name(self.row, self.col)


@dataclass
class Scene:
    """A square canvas of ``image_size`` pixels with a plain background and its objects."""

    image_size: int
    background: tuple[int, int, int]
    background_name: str
    objects: list[Obj] = field(default_factory=list)


def make_scene(
    rng: random.Random, image_size: int = 128, min_objects: int = 1, max_objects: int = 4
) -> Scene:
    """Draw a scene: background tone, object count, distinct cells, attributes and jittered placement."""
    bg_name = rng.choice(sorted(BACKGROUNDS))
    bg = tuple(max(0, min(255, v + rng.randint(-5, 5))) for v in BACKGROUNDS[bg_name])
    n = rng.randint(min_objects, max_objects)
    cells = sorted(rng.sample(range(9), n))
    cell = image_size / 3
    objects = []
    for c in cells:
        row, col = ROWS[c // 3], COLS[c % 3]
        shape, color, size = rng.choice(SHAPES), rng.choice(sorted(COLORS)), rng.choice(SIZES)
        side = round(SIZE_FRACTION[size] * image_size)
        # Jitter of at most 3% of the image, limited so the shape stays inside its own cell.
        room = max(0, int((cell - side) / 2))
        j = min(round(0.03 * image_size), room)
        cx = (c % 3 + 0.5) * cell + rng.randint(-j, j)
        cy = (c // 3 + 0.5) * cell + rng.randint(-j, j)
        x0 = max(0, min(image_size - side, round(cx - side / 2)))
        y0 = max(0, min(image_size - side, round(cy - side / 2)))
        objects.append(Obj(shape, color, size, row, col, x0, y0, side, side))
    return Scene(image_size, bg, bg_name, objects)


def render(scene: Scene) -> Image.Image:
    """Draw the scene with PIL: ellipse, rectangle or isosceles triangle filling each bbox."""
    img = Image.new("RGB", (scene.image_size, scene.image_size), scene.background)
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        fill = COLORS[o.color]
        x1, y1 = o.x + o.w - 1, o.y + o.h - 1
        if o.shape == "circle":
            draw.ellipse([o.x, o.y, x1, y1], fill=fill)
        elif o.shape == "square":
            draw.rectangle([o.x, o.y, x1, y1], fill=fill)
        else:
            draw.polygon([(o.x, y1), (x1, y1), ((o.x + x1) / 2, o.y)], fill=fill)
    return img


def render_jpeg(scene: Scene) -> bytes:
    """The scene as JPEG bytes (quality 95); deterministic for a given Pillow build."""
    buf = io.BytesIO()
    render(scene).save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def relations(a: Obj, b: Obj) -> list[str]:
    """Spatial relations that hold from ``a`` to ``b``, by strict row / column comparison."""
    out = []
    ca, cb, ra, rb = COLS.index(a.col), COLS.index(b.col), ROWS.index(a.row), ROWS.index(b.row)
    if ca < cb:
        out.append("to the left of")
    if ca > cb:
        out.append("to the right of")
    if ra < rb:
        out.append("above")
    if ra > rb:
        out.append("below")
    return out


def object_ids(first_id: int, scene: Scene) -> list[str]:
    """String object ids for a scene, GQA style: consecutive numerals from ``first_id``."""
    return [str(first_id + k) for k in range(len(scene.objects))]


def scene_graph(scene: Scene, ids: list[str]) -> dict:
    """The scene in GQA scene-graph format (``relations`` is a list, attributes are
    ``[color, size, position name]``)."""
    objs = {}
    for oid, o in zip(ids, scene.objects, strict=True):
        rels = [
            {"name": r, "object": other_id}
            for other_id, other in zip(ids, scene.objects, strict=True)
            if other is not o
            for r in relations(o, other)
        ]
        objs[oid] = {
            "name": o.shape,
            "x": o.x,
            "y": o.y,
            "w": o.w,
            "h": o.h,
            "attributes": [o.color, o.size, o.position],
            "relations": rels,
        }
    return {"width": scene.image_size, "height": scene.image_size, "objects": objs}
