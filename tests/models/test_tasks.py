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
