"""The published dataset's schema (DESIGN.md section 6, contract), one row per image, as `datasets` features:
the Parquet files carry it in their `huggingface` schema metadata, so `image` decodes to a PIL image under
both `load_dataset(DIR)` and `load_dataset("parquet", data_files=...)`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from datasets import Features, Image, List, Value

__all__ = [
    "FEATURES",
    "REGION_QA_FIELDS",
    "Provenance",
    "TRAINING_FIELDS",
    "features",
]

FEATURES = Features(
    {
        "key": Value("string"),
        "image": Image(),
        "url": Value("string"),
        "caption": Value("string"),
        "width": Value("int32"),
        "height": Value("int32"),
        "qa": List(
            {
                "question": Value("string"),
                "answer": Value("string"),
                "type": Value("string"),
                "filter_answer": Value("string"),
                "score": Value("float32"),
            }
        ),
        "regions": List(
            {"bbox": List(Value("float32"), length=4), "caption": Value("string"), "score": Value("float32")}
        ),
        "provenance": {
            "generator": Value("string"),
            "filter": Value("string"),
            "config": Value("string"),
            "seed": Value("int64"),
            "source_shard": Value("string"),
            "source_key": Value("string"),  # the sample's key in its source (img2dataset's key)
            "generator_attention": Value("string"),
            "filter_attention": Value("string"),
        },
    }
)


@dataclass(frozen=True)
class Provenance:
    """A row's `provenance`: what made it."""

    generator: str  # fingerprint of the generator's fine-tuning (its checkpoint)
    filter: str  # fingerprint of the filter model's fine-tuning
    config: str  # fingerprint of both and of the publishing settings
    seed: int
    source_shard: str
    source_key: str  # the sample's key in its source (img2dataset's key)
    generator_attention: str
    filter_attention: str
    # each model's training options (its jade_model.json `training`, as JSON), only in a dataset whose models
    # were not both trained the default way (`features(training=True)`); else the fields are not in the schema
    generator_training: str | None = None
    filter_training: str | None = None

    def row(self) -> dict:
        """As a row's `provenance`: the training fields only when they are set."""
        return {
            k: v for k, v in dataclasses.asdict(self).items() if v is not None or k not in TRAINING_FIELDS
        }


TRAINING_FIELDS = ("generator_training", "filter_training")
# a kept pair's fields under `generate.condition: region` (its question was asked about one kept dense-caption
# region): JADE's question type (what | how | where | who | why | when | binary) and the region itself; only in
# such a dataset's schema (`features(region=True)`), so a type-conditioned dataset keeps the contract's columns
REGION_QA_FIELDS = {
    "jade_type": Value("string"),
    "region": {"bbox": List(Value("float32"), length=4), "caption": Value("string")},
}


def features(embed_images: bool, training: bool = False, region: bool = False) -> Features:
    """The dataset's features; ``training``: the provenance also carries each model's training options;
    ``region``: each kept pair carries its `REGION_QA_FIELDS` (`generate.condition: region`)."""
    feats = dict(FEATURES)
    if region:
        feats["qa"] = List({**FEATURES["qa"].feature, **REGION_QA_FIELDS})
    if training:
        feats["provenance"] = {**FEATURES["provenance"], **{k: Value("string") for k in TRAINING_FIELDS}}
    if not embed_images:
        del feats["image"]
    return Features(feats)
