"""Dense captions: malformed samples and near-duplicate boxes are dropped, and with `generate.region_support`
a box is kept only when enough of the image's other samples propose an overlapping box (self-consistency)."""

from collections import Counter

import pytest

from jade.app.manifest import ManifestError
from jade.models.backends.base import Completion
from jade.models.tasks import parse_box
from jade.stages.generate import GenerateConfig as Generate
from jade.stages.generate import Generator

A = "<loc0100><loc0100><loc0400><loc0400>"  # one object, proposed three times (slightly moved)
A2 = "<loc0110><loc0100><loc0400><loc0410>"
A3 = "<loc0100><loc0120><loc0410><loc0400>"
B = "<loc0600><loc0600><loc0900><loc0900>"  # a second object, twice
B2 = "<loc0610><loc0600><loc0900><loc0900>"
STRAY = "<loc0000><loc0700><loc0200><loc1000>"  # proposed once
SAMPLES = [
    (A, "a red circle", 0.9),
    (A2, "red circle", 0.8),
    (A3, "the red circle", 0.7),
    (B, "a blue square", 0.6),
    (B2, "blue square", 0.5),
    (STRAY, "a green triangle", 0.4),
    ("no box here", "", 0.3),
]


def regions(support: int) -> tuple[list[dict], Counter]:
    gen = Generator.__new__(Generator)  # the method under test needs only the settings
    gen.g = Generate(region_support=support)
    stats: Counter = Counter()
    comps = [Completion(f"{box} {text}".strip(), score) for box, text, score in SAMPLES]
    return gen._regions(comps, stats), stats


def test_without_support_every_parsed_box_counts():
    kept, stats = regions(0)
    assert [r["caption"] for r in kept] == ["a red circle", "a blue square", "a green triangle"]
    assert stats == Counter(regions_generated=7, regions_malformed=1, regions_duplicate=3, regions_kept=3)


@pytest.mark.parametrize(
    ("support", "captions"), [(1, ["a red circle", "a blue square"]), (2, ["a red circle"])]
)
def test_support_keeps_what_the_samples_agree_on(support, captions):
    kept, stats = regions(support)
    assert [r["caption"] for r in kept] == captions
    # the red circle's box is the mean of its three proposals
    proposals = [parse_box(b) for b in (A, A2, A3)]
    assert kept[0]["bbox"] == pytest.approx([sum(c) / 3 for c in zip(*proposals, strict=True)])
    assert stats["regions_generated"] == sum(
        stats[k] for k in ("regions_kept", "regions_malformed", "regions_duplicate", "regions_unsupported")
    )


def test_support_must_leave_room_for_agreement():
    with pytest.raises(ManifestError, match="region_support"):
        Generate(captions=3, region_support=3).validate("generate")


def test_consensus_caption_outvotes_a_wrong_draw():
    """With `region_caption: consensus` a fused box takes the caption its agreeing samples agree on most, not the
    highest-scored one: a colour that one draw got wrong is outvoted."""
    gen = Generator.__new__(Generator)
    gen.g = Generate(region_support=1, region_caption="consensus")
    samples = [(A, "a green circle", 0.9), (A2, "the red circle", 0.8), (A3, "red circle on the left", 0.7)]
    kept = gen._regions([Completion(f"{b} {t}", s) for b, t, s in samples], Counter())
    assert [r["caption"] for r in kept] == ["the red circle"]
    gen.g = Generate(region_support=1)  # best: the highest-scored sample's caption
    kept = gen._regions([Completion(f"{b} {t}", s) for b, t, s in samples], Counter())
    assert [r["caption"] for r in kept] == ["a green circle"]


def test_region_caption_is_checked():
    with pytest.raises(ManifestError, match="region_caption"):
        Generate(region_caption="vote").validate("generate")


def test_support_can_require_the_captions_to_agree_too():
    """With `region_support_words`, a sample supports a box only when its caption shares enough words too: two
    boxes in one place that name different objects do not support each other."""
    gen = Generator.__new__(Generator)
    samples = [(A, "a red circle", 0.9), (A2, "the blue square on the left", 0.8), (B, "a green one", 0.7)]
    comps = [Completion(f"{b} {t}", s) for b, t, s in samples]
    gen.g = Generate(region_support=1)
    assert [r["caption"] for r in gen._regions(comps, Counter())] == ["a red circle"]
    gen.g = Generate(region_support=1, region_support_words=0.5)
    stats: Counter = Counter()
    assert gen._regions(comps, stats) == [] and stats["regions_unsupported"] == 3


def test_rank_support_keeps_the_box_most_samples_agree_on():
    """Two supported boxes of one object, the second shifted off it (IoU 0.43 with the first: neither supports
    the other) and better scored. Ranked by score, the shifted box is kept and the right one dropped as its
    near-duplicate; ranked by support (`region_rank: support`), the box three samples agree on is kept."""
    shifted, shifted2 = "<loc0100><loc0220><loc0400><loc0520>", "<loc0100><loc0230><loc0400><loc0520>"
    samples = [
        (shifted, "a red circle", 0.9),
        (shifted2, "a red circle", 0.85),
        (A, "the red circle", 0.5),
        (A2, "the red circle", 0.4),
        (A3, "red circle", 0.3),
    ]
    comps = [Completion(f"{b} {t}", s) for b, t, s in samples]
    gen = Generator.__new__(Generator)
    gen.g = Generate(region_support=1, box_dedup_iou=0.3)
    kept = gen._regions(comps, Counter())
    assert len(kept) == 1 and kept[0]["score"] == 0.9
    gen.g = Generate(region_support=1, box_dedup_iou=0.3, region_rank="support")
    stats: Counter = Counter()
    kept = gen._regions(comps, stats)
    assert len(kept) == 1 and kept[0]["score"] == 0.5 and kept[0]["caption"] == "the red circle"
    assert (
        stats["regions_duplicate"] == 4 and stats["regions_kept"] == 1
    )  # every supported draw is a candidate
    with pytest.raises(ManifestError, match="region_rank"):
        Generate(region_rank="votes").validate("generate")
