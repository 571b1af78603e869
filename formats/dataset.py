"""The published dataset's schema (DESIGN.md section 6, contract), one row per image, as `datasets` features:
the Parquet files carry it in their `huggingface` schema metadata, so `image` decodes to a PIL image under
both `load_dataset(DIR)` and `load_dataset("parquet", data_files=...)`."""

from __future__ import annotations

from dataclasses import dataclass

from datasets import Features, Image, List, Value

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


def features(embed_images: bool) -> Features:
    if embed_images:
        return FEATURES
    return Features({k: v for k, v in FEATURES.items() if k != "image"})
