"""The in-process executor, in milliseconds: one worker per map, every item's summary in order and through
`on_result` as it comes, a shard that raises becomes a failed-shard summary while the others go on, the
JADE_FAULT hook, and a worker factory that pickles (the class and its arguments travel, not an instance)."""

import pickle

import pytest

from jade.pipeline.executor import Executor, LocalExecutor, WorkerFactory
from jade.pipeline.resources import StageResources

BUILT: list[str] = []


class Doubler:
    def __init__(self, tag: str):
        BUILT.append(tag)
        self.tag = tag

    def __call__(self, item: dict) -> dict:
        if item["shard_id"] == "bad":
            raise ValueError("cannot read it")
        return {"shard": item["shard_id"], "out": 2 * item["n"], "tag": self.tag}


def _items(*ids):
    return [{"stage": "double", "shard_id": s, "n": i} for i, s in enumerate(ids)]


def test_one_worker_every_summary_in_order_and_as_it_comes():
    BUILT.clear()
    seen: list[dict] = []
    ex: Executor = LocalExecutor()
    out = ex.map_shards(
        WorkerFactory(Doubler, "w"), _items("a", "b", "c"), StageResources(), on_result=seen.append
    )
    assert BUILT == ["w"]  # built once, for all items
    assert [r["out"] for r in out] == [0, 2, 4] and seen == out
    assert ex.map_shards(WorkerFactory(Doubler, "x"), [], StageResources()) == [] and BUILT == ["w"]


def test_a_shard_that_raises_is_a_failed_summary_and_the_others_go_on():
    out = LocalExecutor().map_shards(WorkerFactory(Doubler, "w"), _items("a", "bad", "c"), StageResources())
    assert [r.get("out") for r in out] == [0, None, 4]
    assert out[1]["shard"] == "bad" and out[1]["error"] == "ValueError: cannot read it"
    assert "cannot read it" in out[1]["traceback"]


def test_the_fault_hook_fails_only_the_named_shard(monkeypatch):
    monkeypatch.setenv("JADE_FAULT", "raise:double:b")
    out = LocalExecutor().map_shards(WorkerFactory(Doubler, "w"), _items("a", "b"), StageResources())
    assert "out" in out[0] and out[1]["error"].startswith(
        "RuntimeError: injected fault (JADE_FAULT) on double"
    )


def test_a_worker_factory_pickles_and_builds_on_the_other_side():
    factory = pickle.loads(pickle.dumps(WorkerFactory(Doubler, "there")))
    assert factory()({"shard_id": "a", "n": 3}) == {"shard": "a", "out": 6, "tag": "there"}


@pytest.mark.parametrize("method", ["map_shards", "train", "gpus", "shutdown"])
def test_both_executors_provide_the_protocol(method):
    from jade.pipeline.executor import RayExecutor

    for cls in (LocalExecutor, RayExecutor):
        assert callable(getattr(cls, method)) and isinstance(cls.name, str)
