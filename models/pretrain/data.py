"""The pretraining data: the published dataset, read with `datasets` (streamed when large), with the original
alt-text captions (the `caption` column); optionally the rejected QA pairs (the unfiltered ablation).

Images are split by a hash of their key into pretraining and held-out evaluation images, so every variant and
seed holds out the same images.
"""

from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path

from jade.models.pretrain.base import PretrainData

STREAM_ABOVE_BYTES = 1 << 30


def held_out(key: str, fraction: float) -> bool:
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def _parquet_files(folder: Path) -> list[str]:
    return sorted(glob.glob(str(folder / "*.parquet")))


def load_split(
    dataset_dir: str | Path,
    variant: str,
    eval_fraction: float,
    image_size: int,
    streaming: bool | None = None,
    max_images: int | None = None,
) -> tuple[PretrainData, PretrainData]:
    """(pretraining data, held-out data) from ``dataset_dir`` (the published layout: data/train-*.parquet).

    variant: ``alttext`` keeps only the captions; ``filtered`` adds the kept QA pairs and dense captions;
    ``unfiltered`` also adds back every rejected pair that has an answer (``../rejected/*.parquet``).
    """
    import datasets

    dataset_dir = Path(dataset_dir)
    files = _parquet_files(dataset_dir / "data")
    if not files:
        raise FileNotFoundError(f"{dataset_dir}/data: no *.parquet files (is this a published dataset?)")
    if streaming is None:
        streaming = sum(os.path.getsize(f) for f in files) > STREAM_ABOVE_BYTES
    ds = datasets.load_dataset("parquet", data_files=files, split="train", streaming=streaming)
    rejected = _rejected(dataset_dir.parent / "rejected") if variant == "unfiltered" else {}
    train, heldout = _empty(), _empty()
    for n, row in enumerate(ds):
        if max_images is not None and n >= max_images:
            break
        target = heldout if held_out(row["key"], eval_fraction) else train
        target.keys.append(row["key"])
        target.images.append(row["image"].convert("RGB").resize((image_size, image_size)))
        target.captions.append(" ".join((row.get("caption") or "").split()))
        kept_qa, regions = list(row.get("qa") or []), list(row.get("regions") or [])
        target.vocab_texts += [target.captions[-1]] + [r["caption"] for r in regions]
        target.vocab_texts += [p[k] for p in kept_qa for k in ("question", "answer")]
        qa = kept_qa + rejected.get(row["key"], [])
        target.qa.append(qa if variant != "alttext" else [])
        target.regions.append(regions if variant != "alttext" else [])
    return train, heldout


def _empty() -> PretrainData:
    return PretrainData(keys=[], images=[], captions=[], qa=[], regions=[])


def _rejected(folder: Path) -> dict[str, list[dict]]:
    """Rejected pairs with an answer, by image key (a duplicate question has none and stays out)."""
    import datasets

    files = _parquet_files(folder)
    if not files:
        return {}
    out: dict[str, list[dict]] = {}
    for row in datasets.load_dataset("parquet", data_files=files, split="train"):
        if row.get("question") and row.get("answer"):
            out.setdefault(row["key"], []).append({"question": row["question"], "answer": row["answer"]})
    return out


class DatasetSource:
    """A published dataset as the pretrainer's source: one chunk, the pretraining split, for every step."""

    def __init__(self, cfg, dataset_dir: str | Path):
        self.data, _ = load_split(
            dataset_dir, cfg.data, cfg.eval_fraction, cfg.arch.image_size, cfg.streaming, cfg.max_images
        )

    def chunk_of(self, step: int) -> int:
        return 0

    def chunk(self, c: int) -> PretrainData:
        return self.data

    def vocab_texts(self) -> list[str]:
        return self.data.vocab_texts


def make_source(cfg, dataset_dir: str | Path | None, given=None):
    """The source `cfg.source` names: a published dataset, or the one the application passes in (``given``:
    the sample world's scene stream, `app.world_source`, which `jade base` builds; the pretrainer knows no
    world of its own)."""
    if given is not None:
        return given
    if cfg.source == "dataset":
        if not dataset_dir:
            raise ValueError("pretrain: the dataset source needs a published dataset directory")
        return DatasetSource(cfg, dataset_dir)
    raise ValueError(
        f"pretrain.source: {cfg.source!r} is passed in by the application (jade base), not built here"
    )
