from jade.models import tasks


def test_box_roundtrip_paligemma_order():
    box = (0.1, 0.2, 0.5, 0.9)
    s = tasks.caption_target(box, "a  red circle ")
    assert s.startswith("<loc0205><loc0102><loc0921><loc0512>")  # y0 x0 y1 x1
    (parsed, caption) = tasks.parse_caption(s)
    assert caption == "a red circle"
    assert all(abs(a - b) < 1e-3 for a, b in zip(parsed, box, strict=True))


def test_malformed_captions():
    assert tasks.parse_caption("a red circle") is None
    assert tasks.parse_caption("<loc0001><loc0002><loc0003> x") is None
    assert tasks.parse_caption("<loc0500><loc0500><loc0100><loc0900> x") is None  # y1 < y0
    assert tasks.parse_caption("<loc0001><loc0002><loc0003><loc0004>") is None  # no words


def test_iou():
    assert tasks.iou((0, 0, 1, 1), (0, 0, 1, 1)) == 1.0
    assert tasks.iou((0, 0, 0.5, 1), (0.5, 0, 1, 1)) == 0.0
    assert abs(tasks.iou((0, 0, 1, 1), (0, 0, 0.5, 1)) - 0.5) < 1e-9


def test_jade_types_from_the_leading_word():
    cases = {
        "Is the circle red?": "binary",
        "Are there any squares?": "binary",
        "How many circles are there?": "how",
        "Where is the red circle?": "where",
        "Which object is red?": "what",
        "Whose hat is this?": "who",
        "Why is it red?": "why",
        "When was it taken?": "when",
    }
    for q, want in cases.items():
        assert tasks.jade_type(q) == want, q
    assert tasks.jade_type("Name the shape.", "number") == "how"  # no wh-word, no auxiliary: the VQA type's
    assert tasks.vqa_type("binary", "Is the circle red?") == "yes/no"
    assert tasks.vqa_type("how", "How many circles are there?") == "number"
    assert tasks.vqa_type("how", "How big is the circle?") == "other"
    assert tasks.vqa_type("where", "Where is it?") == "other"


def test_region_question_prompt_carries_type_box_and_caption():
    box = (0.1, 0.2, 0.5, 0.9)
    p = tasks.region_question_prompt("binary", box, " a  red circle ")
    assert p == "question binary <loc0205><loc0102><loc0921><loc0512> a red circle"
    parsed, caption = tasks.parse_caption(p.split(" ", 2)[2])
    assert caption == "a red circle" and all(abs(a - b) < 1e-3 for a, b in zip(parsed, box, strict=True))
