"""Task mixing: dynamic difficulty sampling and the comparison strategies."""

import pytest

from jade.models.pretrain.sampler import TaskSampler, apportion

SIZES = {"itc": 100, "itm": 100, "caption": 100, "vqa": 500}


def test_apportion_keeps_the_floor_and_the_total():
    counts = apportion({"a": 10.0, "b": 1.0, "c": 0.0}, 32, 4)
    assert sum(counts.values()) == 32 and min(counts.values()) >= 4
    assert counts["a"] > counts["b"] >= counts["c"] == 4


def test_dynamic_starts_uniform_then_follows_the_accumulated_loss():
    s = TaskSampler(SIZES, 64, "dynamic", window=3, min_per_task=4)
    assert set(s.allocate(0).values()) == {16}
    for _ in range(3):
        s.update({"itc": 3.0, "itm": 1.0, "caption": 1.0, "vqa": 1.0})
    alloc = s.allocate(3)
    assert sum(alloc.values()) == 64 and min(alloc.values()) >= 4
    # 48 free examples split 3:1:1:1 over the window's losses
    assert alloc == {"itc": 4 + 24, "itm": 4 + 8, "caption": 4 + 8, "vqa": 4 + 8}
    for _ in range(3):  # the window forgets: after K steps only the recent losses count
        s.update({"itc": 1.0, "itm": 1.0, "caption": 1.0, "vqa": 3.0})
    assert s.allocate(6)["vqa"] == 28


def test_state_round_trip():
    s = TaskSampler(SIZES, 32, "dynamic", window=5)
    s.update({"itc": 2.0, "itm": 1.0, "caption": 1.0, "vqa": 1.0})
    t = TaskSampler(SIZES, 32, "dynamic", window=5)
    t.load_state_dict(s.state_dict())
    assert t.allocate(1) == s.allocate(1)


@pytest.mark.parametrize("strategy", ["uniform", "proportional", "round_robin"])
def test_other_strategies(strategy):
    s = TaskSampler(SIZES, 32, strategy, min_per_task=4)
    allocs = [s.allocate(step) for step in range(4)]
    assert all(sum(a.values()) == 32 for a in allocs)
    if strategy == "uniform":
        assert allocs[0] == dict.fromkeys(SIZES, 8)
    elif strategy == "proportional":
        assert allocs[0]["vqa"] > allocs[0]["itc"] and min(allocs[0].values()) >= 4
    else:
        assert [max(a, key=a.get) for a in allocs] == list(SIZES) and all(
            max(a.values()) == 32 for a in allocs
        )
