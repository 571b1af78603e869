"""The one question and caption language of the sample world, used by every writer and by the checker.

Writers draw questions with :func:`sample_questions` (or :func:`sample_question_records` when they need
the referenced objects, as the GQA writer does) and region phrases with :func:`region_phrases`. The
evaluation side parses free text back: :func:`answer_question` computes the true canonical answer of a
question from a GQA-format scene graph, and :func:`caption_matches` checks a dense caption against one
object. Canonical answers are lowercase: ``yes``/``no``, digits, a colour, a shape, a size or a position
name such as ``top left``.
"""

from __future__ import annotations

import random
import re
from typing import NamedTuple

from .scene import COLORS, POSITIONS, RELATIONS, SHAPES, SIZES, Obj, Scene, parse_position, relations

QTYPES = ("yes/no", "number", "other")
QTYPE_WEIGHTS = {"yes/no": 0.4, "number": 0.2, "other": 0.4}
COLOR_NAMES = tuple(sorted(COLORS))


class Thing(NamedTuple):
    """An object as the language sees it, from a :class:`Scene` or a scene-graph entry."""

    id: str
    shape: str
    color: str | None
    size: str | None
    position: str | None
    rels: frozenset  # {(relation name, other object id)}


class QA(NamedTuple):
    """A generated question with its canonical answer, answer type, template name and referents."""

    question: str
    answer: str
    qtype: str
    template: str
    refs: tuple  # the Things the question names, in order of mention
    slots: dict  # template arguments (shape, color, relation, ...)


def _first(values, vocab):
    return next((v for v in values if v in vocab), None)


def _thing(oid: str, obj) -> Thing:
    if isinstance(obj, Obj):
        return Thing(oid, obj.shape, obj.color, obj.size, obj.position, frozenset())
    attrs = obj.get("attributes", [])
    rels = frozenset((r["name"], str(r["object"])) for r in obj.get("relations", []))
    return Thing(
        oid, obj["name"], _first(attrs, COLORS), _first(attrs, SIZES), _first(attrs, POSITIONS), rels
    )


def things(scene_or_graph: Scene | dict) -> list[Thing]:
    """The objects of a :class:`Scene` (ids ``"0"``, ``"1"``, ...) or of a GQA scene-graph entry."""
    if isinstance(scene_or_graph, Scene):
        objs = scene_or_graph.objects
        return [
            Thing(
                str(i),
                o.shape,
                o.color,
                o.size,
                o.position,
                frozenset((r, str(j)) for j, p in enumerate(objs) if p is not o for r in relations(o, p)),
            )
            for i, o in enumerate(objs)
        ]
    return [_thing(str(k), o) for k, o in scene_or_graph["objects"].items()]


def _an(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _pick(ts, **attrs):
    return [t for t in ts if all(getattr(t, k) == v for k, v in attrs.items() if v is not None)]


def _unique_by(ts, *keys):
    return [t for t in ts if len(_pick(ts, **{k: getattr(t, k) for k in keys})) == 1]


def _true_rels(a: Thing, b: Thing) -> list[str]:
    return [name for name, other in sorted(a.rels) if other == b.id]


# --- generators: each returns a QA or None when the template cannot be asked (for the wanted answer) ---


def _exist_cs(ts, rng, want):
    if want == "yes":
        t = rng.choice(ts)
        c, s = t.color, t.shape
    else:
        c, s = rng.choice([(c, s) for c in COLOR_NAMES for s in SHAPES if not _pick(ts, color=c, shape=s)])
    q = f"Is there {_an(c)} {c} {s}?"
    return QA(q, want, "yes/no", "exist_cs", tuple(_pick(ts, color=c, shape=s)), {"color": c, "shape": s})


def _exist_s(ts, rng, want):
    present = sorted({t.shape for t in ts})
    pool = present if want == "yes" else [s for s in SHAPES if s not in present]
    if not pool:
        return None
    s = rng.choice(pool)
    return QA(f"Are there any {s}s?", want, "yes/no", "exist_s", tuple(_pick(ts, shape=s)), {"shape": s})


def _verify_color(ts, rng, want):
    pool = _unique_by(ts, "shape")
    if not pool:
        return None
    t = rng.choice(pool)
    c = t.color if want == "yes" else rng.choice([c for c in COLOR_NAMES if c != t.color])
    return QA(f"Is the {t.shape} {c}?", want, "yes/no", "verify_color", (t,), {"shape": t.shape, "color": c})


def _relation(ts, rng, want):
    pool = _unique_by(ts, "color", "shape")
    pairs = [(a, b) for a in pool for b in pool if a.id != b.id]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    true = _true_rels(a, b)
    r = rng.choice(true) if want == "yes" else rng.choice([r for r in RELATIONS if r not in true])
    q = f"Is the {a.color} {a.shape} {r} the {b.color} {b.shape}?"
    slots = {"color": a.color, "shape": a.shape, "relation": r, "color2": b.color, "shape2": b.shape}
    return QA(q, want, "yes/no", "relation", (a, b), slots)


def _count_shape(ts, rng, _):
    s = rng.choice(sorted({t.shape for t in ts})) if rng.random() < 0.7 else rng.choice(SHAPES)
    n = len(_pick(ts, shape=s))
    return QA(
        f"How many {s}s are there?", str(n), "number", "count_shape", tuple(_pick(ts, shape=s)), {"shape": s}
    )


def _count_color(ts, rng, _):
    c = rng.choice(sorted({t.color for t in ts})) if rng.random() < 0.7 else rng.choice(COLOR_NAMES)
    found = _pick(ts, color=c)
    return QA(
        f"How many {c} objects are there?",
        str(len(found)),
        "number",
        "count_color",
        tuple(found),
        {"color": c},
    )


def _count_cs(ts, rng, _):
    if rng.random() < 0.7:
        t = rng.choice(ts)
        c, s = t.color, t.shape
    else:
        c, s = rng.choice(COLOR_NAMES), rng.choice(SHAPES)
    found = _pick(ts, color=c, shape=s)
    return QA(
        f"How many {c} {s}s are there?",
        str(len(found)),
        "number",
        "count_cs",
        tuple(found),
        {"color": c, "shape": s},
    )


def _count_all(ts, rng, _):
    return QA("How many objects are there?", str(len(ts)), "number", "count_all", tuple(ts), {})


def _query(attr, keys, fmt):
    def gen(ts, rng, _):
        pool = _unique_by(ts, *keys)
        if not pool:
            return None
        t = rng.choice(pool)
        slots = {k: getattr(t, k) for k in keys}
        return QA(fmt.format(**slots), getattr(t, attr), "other", f"query_{attr}", (t,), slots)

    return gen


TEMPLATES = {
    "yes/no": (_exist_cs, _exist_s, _verify_color, _relation),
    "number": (_count_shape, _count_color, _count_all),
    "other": (
        _query("color", ("shape",), "What color is the {shape}?"),
        _query("shape", ("color",), "What shape is the {color} object?"),
        _query("size", ("color", "shape"), "What size is the {color} {shape}?"),
        _query("position", ("color", "shape"), "Where is the {color} {shape}?"),
    ),
}


# VQA v2 counts objects named by colour and shape too ("How many red circles are there?"), as the real VQA v2
# does ("How many white cars are there?"). Only the VQA writer asks them: the other writers, the base's scene
# stream and `jade eval`'s probe questions draw from TEMPLATES, so their data are what they were.
VQA_TEMPLATES = {**TEMPLATES, "number": (*TEMPLATES["number"], _count_cs)}


def sample_question_records(
    scene: Scene | dict, rng: random.Random, n: int, qtypes=QTYPES, templates=TEMPLATES
) -> list[QA]:
    """Up to ``n`` distinct questions about the scene; yes/no answers are drawn half yes, half no.
    ``templates``: the templates per answer type."""
    ts = things(scene)
    if not ts:
        return []
    allowed = [t for t in QTYPES if t in qtypes]
    weights = [QTYPE_WEIGHTS[t] for t in allowed]
    out, seen = [], set()
    for _ in range(20 * n):
        if len(out) >= n:
            break
        qtype = rng.choices(allowed, weights)[0]
        want = rng.choice(("yes", "no")) if qtype == "yes/no" else None
        for gen in rng.sample(templates[qtype], len(templates[qtype])):
            qa = gen(ts, rng, want)
            if qa is not None and qa.question not in seen:
                seen.add(qa.question)
                out.append(qa)
                break
    return out


def sample_questions(
    scene: Scene | dict, rng: random.Random, n: int, qtypes=QTYPES, templates=TEMPLATES
) -> list[tuple[str, str, str]]:
    """Up to ``n`` distinct ``(question, canonical answer, answer type)`` triples about the scene."""
    records = sample_question_records(scene, rng, n, qtypes, templates)
    return [(qa.question, qa.answer, qa.qtype) for qa in records]


# --- parser ---

_C = "|".join(COLOR_NAMES)
_SZ = "|".join(SIZES)
_NOUN = "|".join((*SHAPES, "object", "shape"))
_NP = rf"(?:({_SZ}) )?(?:({_C}) )?({_NOUN})"
_NPS = rf"(?:({_SZ}) )?(?:({_C}) )?({_NOUN})s"
_REL = "|".join(RELATIONS)
_PATTERNS = [
    ("exist", re.compile(rf"is there an? {_NP}")),
    ("exist", re.compile(rf"are there any {_NPS}")),
    ("relation", re.compile(rf"is the {_NP} ({_REL}) the {_NP}")),
    ("verify", re.compile(rf"is the {_NP} ({_C}|{_SZ})")),
    ("count", re.compile(rf"how many {_NPS} are there")),
    ("query", re.compile(rf"what (color|shape|size) is the {_NP}")),
    ("where", re.compile(rf"where is the {_NP}")),
]
ANSWER_TYPE = {"exist": "yes/no", "relation": "yes/no", "verify": "yes/no", "count": "number"}


def _normalize(question: str) -> str:
    return re.sub(r"\s+", " ", question.strip().lower()).rstrip("?.! ")


def parse_question(question: str) -> tuple[str, tuple] | None:
    """``(kind, regex groups)`` of a question in the sample-world language, else None."""
    q = _normalize(question)
    for kind, pat in _PATTERNS:
        m = pat.fullmatch(q)
        if m:
            return kind, m.groups()
    return None


def question_answer_type(question: str) -> str | None:
    """VQA answer type (``yes/no``, ``number``, ``other``) of a parseable question, else None."""
    parsed = parse_question(question)
    return None if parsed is None else ANSWER_TYPE.get(parsed[0], "other")


def _select(ts, size, color, noun):
    return _pick(ts, size=size, color=color, shape=noun if noun in SHAPES else None)


def _the(ts, size, color, noun):
    found = _select(ts, size, color, noun)
    return found[0] if len(found) == 1 else None


def answer_question(question: str, scene_graph: dict) -> str | None:
    """The true canonical answer of ``question`` for one GQA-format scene-graph entry, or None when the
    question cannot be parsed or is ill-posed (a definite description that names no object or several)."""
    parsed = parse_question(question)
    if parsed is None:
        return None
    kind, g = parsed
    ts = things(scene_graph)
    if kind == "exist":
        return "yes" if _select(ts, *g) else "no"
    if kind == "count":
        return str(len(_select(ts, *g)))
    if kind == "relation":
        a, b = _the(ts, *g[:3]), _the(ts, *g[4:])
        if a is None or b is None or a.id == b.id:
            return None
        return "yes" if g[3] in _true_rels(a, b) else "no"
    if kind == "verify":
        t = _the(ts, *g[:3])
        if t is None:
            return None
        return "yes" if g[3] in (t.color, t.size) else "no"
    t = _the(ts, *g[1:]) if kind == "query" else _the(ts, *g)
    if t is None:
        return None
    return t.position if kind == "where" else {"color": t.color, "shape": t.shape, "size": t.size}[g[0]]


def question_referents(question: str, scene_graph: dict) -> list[str] | None:
    """The ids of the objects a question is about: those its first noun phrase names as the parser reads it
    (``"What color is the circle?"``: every circle; a relation question's subject; ``"How many objects ..."``:
    every object), in the graph's order, or None when the question cannot be parsed. An empty list: the
    phrase names no object of the image."""
    parsed = parse_question(question)
    if parsed is None:
        return None
    kind, g = parsed
    phrase = g[1:4] if kind == "query" else g[:3]
    return [t.id for t in _select(things(scene_graph), *phrase)]


# --- region phrases and caption checking ---

_POS_PHRASE = {"top": "at the top", "bottom": "at the bottom", "left": "on the left", "right": "on the right"}
_SIZE_WORDS = {"small": "small", "little": "small", "tiny": "small", "large": "large", "big": "large"}
_ROW_WORDS = {"top": "top", "upper": "top", "bottom": "bottom", "lower": "bottom"}
_COL_WORDS = {"left": "left", "right": "right"}
_MID_WORDS = {"middle", "center", "centre"}


def position_phrase(position: str) -> str:
    """Prepositional phrase for a position name: ``"top left" -> "in the top left"``, ``"top" -> "at the top"``."""
    return _POS_PHRASE.get(position, f"in the {position}")


def region_phrases(obj: Obj | dict, rng: random.Random) -> list[str]:
    """Distinct dense-caption phrases for one object, shuffled; each names its colour and shape."""
    t = _thing("", obj)
    c, s, z, p = t.color, t.shape, t.size, position_phrase(t.position)
    cands = [
        f"{_an(z)} {z} {c} {s}",
        f"{c} {s}",
        f"the {z} {c} {s}",
        f"{_an(c)} {c} {s} {p}",
        f"{z} {c} {s} {p}",
        f"the {c} {s} {p}",
        f"{_an(c)} {c} {s}",
        f"the {c} {s} is {z}",
    ]
    rng.shuffle(cands)
    return cands


def caption_matches(caption: str, obj: Obj | dict) -> bool:
    """True iff the caption names exactly the object's colour and shape, and its size and position when
    it names any (``"at the top"`` checks the row only; ``"in the center"`` means the middle cell)."""
    t = _thing("", obj)
    words = re.findall(r"[a-z]+", caption.lower())
    colors = {w for w in words if w in COLORS}
    shapes = {w[:-1] if w[:-1] in SHAPES else w for w in words} & set(SHAPES)
    if colors != {t.color} or shapes != {t.shape}:
        return False
    sizes = {_SIZE_WORDS[w] for w in words if w in _SIZE_WORDS}
    if sizes and sizes != {t.size}:
        return False
    rows = {_ROW_WORDS[w] for w in words if w in _ROW_WORDS}
    cols = {_COL_WORDS[w] for w in words if w in _COL_WORDS}
    if _MID_WORDS & set(words):
        rows = rows or {"middle"}
        cols = cols or {"center"}
    if (rows or cols) and t.position is None:
        return False
    row, col = parse_position(t.position) if t.position else (None, None)
    return (not rows or rows == {row}) and (not cols or cols == {col})
