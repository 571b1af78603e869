"""The tables a run writes for itself (DESIGN.md section 5): their Arrow schemas, shared by the stages that
write them and the ones that read them, and reading a shard's images back by key."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

import pyarrow as pa
from PIL import Image

from .images import decode_image
from .samples import ShardRef
from .shards import iter_shard

__all__ = [
    "ANSWERS",
    "ASKED_REGION",
    "CHECK",
    "EXAMPLE",
    "FAILURE",
    "FILTERED",
    "Failure",
    "GENERATED",
    "GENERATED_QA",
    "KEPT_QA",
    "REGION",
    "REJECTED",
    "Rejection",
    "SAMPLE",
    "failures_table",
    "load_images",
    "reason_category",
    "rejected_table",
]

# training examples of a role (_work/examples/<role>.parquet)
EXAMPLE = pa.schema(
    [
        ("task", pa.string()),
        ("source", pa.string()),
        ("image_path", pa.string()),
        ("prefix", pa.string()),
        ("suffix", pa.string()),
        ("qtype", pa.string()),
    ]
)
# the usable samples of an image shard (_work/ingest/<shard>.parquet, then _work/dedupe/<shard>.parquet)
SAMPLE = pa.schema(
    [
        ("key", pa.string()),
        ("source_key", pa.string()),
        ("url", pa.string()),
        ("caption", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("sha256", pa.string()),
    ]
)
# every input sample that could not be used (failures/*.parquet)
FAILURE = pa.schema(
    [
        ("source", pa.string()),
        ("shard", pa.string()),
        ("key", pa.string()),
        ("url", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
    ]
)
REGION = pa.struct([("bbox", pa.list_(pa.float32(), 4)), ("caption", pa.string()), ("score", pa.float32())])
# the region a question was asked about (`generate.condition: region`); null under `condition: type`
ASKED_REGION = pa.struct([("bbox", pa.list_(pa.float32(), 4)), ("caption", pa.string())])
GENERATED_QA = pa.struct(
    [
        ("question", pa.string()),
        ("type", pa.string()),
        ("answer", pa.string()),
        ("question_score", pa.float32()),
        ("answer_score", pa.float32()),
        ("status", pa.string()),
        ("jade_type", pa.string()),  # JADE's question type, asked for (condition region); else null
        ("region", ASKED_REGION),
    ]
)
GENERATED = pa.schema([("key", pa.string()), ("qa", pa.list_(GENERATED_QA)), ("regions", pa.list_(REGION))])
KEPT_QA = pa.struct(
    [
        ("question", pa.string()),
        ("answer", pa.string()),
        ("type", pa.string()),
        ("filter_answer", pa.string()),
        ("score", pa.float32()),
        ("jade_type", pa.string()),
        ("region", ASKED_REGION),
    ]
)
FILTERED = pa.schema([("key", pa.string()), ("qa", pa.list_(KEPT_QA)), ("regions", pa.list_(REGION))])
REJECTED = pa.schema(
    [
        ("key", pa.string()),
        ("shard", pa.string()),
        ("question", pa.string()),
        ("type", pa.string()),
        ("answer", pa.string()),
        ("filter_answer", pa.string()),
        ("reason", pa.string()),
        ("question_score", pa.float32()),
        ("answer_score", pa.float32()),
        ("filter_score", pa.float32()),
        ("check", pa.string()),
        ("jade_type", pa.string()),
        ("region", ASKED_REGION),
    ]  # the presupposition check that failed, with the filter's answer; the region asked about (or null)
)
# the filter model's answers to a question's presupposition checks (models.presupposition)
CHECK = pa.struct([("question", pa.string()), ("expect", pa.string()), ("answer", pa.string())])
# one row per generated pair, with the filter model's answers (_work/filter/answers/<shard>.parquet)
ANSWERS = pa.schema(
    [
        ("key", pa.string()),
        ("question", pa.string()),
        ("type", pa.string()),
        ("answer", pa.string()),
        ("status", pa.string()),
        ("question_score", pa.float32()),
        ("answer_score", pa.float32()),
        ("filter_answer", pa.string()),
        ("filter_score", pa.float32()),
        ("checks", pa.list_(CHECK)),
        ("jade_type", pa.string()),
        ("region", ASKED_REGION),
    ]
)


@dataclass(frozen=True)
class Failure:
    """An input that could not be used, and why: one row of failures/*.parquet (`FAILURE`)."""

    source: str  # "images" (an image shard), or the annotation source ("vg", "gqa", "vqa")
    shard: str
    key: str
    url: str | None
    stage: str  # the stage that found it
    reason: str


@dataclass(frozen=True)
class Rejection:
    """A QA pair the filter rejected, with both answers and the reason: one row of rejected/*.parquet."""

    key: str
    shard: str
    question: str
    type: str
    answer: str | None
    filter_answer: str | None
    reason: str
    question_score: float | None
    answer_score: float | None
    filter_score: float | None
    check: str | None  # the presupposition check that failed, with the filter's answer
    jade_type: str | None = None  # condition region: JADE's question type and the region asked about
    region: dict | None = None  # {bbox, caption}


def failures_table(rows: Iterable[Failure]) -> pa.Table:
    return pa.Table.from_pylist([asdict(r) for r in rows], schema=FAILURE)


def rejected_table(rows: Iterable[Rejection]) -> pa.Table:
    return pa.Table.from_pylist([asdict(r) for r in rows], schema=REJECTED)


def reason_category(reason: str) -> str:
    """The leading words of a failure reason ("corrupt image: OSError: ..." -> "corrupt image")."""
    found = re.match(r"[a-z][a-z ]*[a-z]", reason)
    return found.group(0) if found else reason[:40]


def load_images(shard: ShardRef, keys: set[str]) -> Iterator[tuple[str, Image.Image, bytes]]:
    """(run-wide key, RGB image, raw bytes) of the samples of ``shard`` whose keys are in ``keys``, in shard
    order, streamed. A key that appears twice in the shard is used once (the first; ingest recorded the other)."""
    wanted = {shard.source_key(k): k for k in keys}
    for s in iter_shard(shard):
        if s.error is None and s.key in wanted:
            yield wanted.pop(s.key), decode_image(s.image_bytes), s.image_bytes
