"""The sample world: a seeded procedural world of simple scenes, written as the real datasets are.

:func:`write_world` writes Visual Genome 1.2, GQA 1.2, VQA v2 (with COCO-named images) and CC3M-like
img2dataset webdataset shards in their published on-disk layouts, plus the hidden truth of every image in
GQA scene-graph format under ``truth/``. Everything derives from ``(seed, dataset, index)``, so the same
config writes byte-identical files. Layout under ``out_dir``::

    world.json                                   config and counts
    vg/image_data.json, region_descriptions.json, question_answers.json, qa_to_region_mapping.json,
       objects.json, attributes.json, relationships.json, VG_100K/{id}.jpg, VG_100K_2/{id}.jpg
    gqa/questions/{train,val,test}_balanced_questions.json, {train,val}_sceneGraphs.json, images/{id}.jpg
    vqa/v2_OpenEnded_mscoco_{train,val}2014_questions.json, v2_mscoco_{train,val}2014_annotations.json
    coco/{train,val}2014/COCO_{split}_{image_id:012d}.jpg
    cc3m/{shard:05d}.tar, {shard:05d}.parquet, {shard:05d}_stats.json
    truth/{vg,gqa,vqa_train,vqa_val,cc3m}_scene_graphs.json
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from jade.atomic import atomic_dir
from jade.typed import ranged

from .cc3m import write_cc3m
from .files import check_replaceable, dump_json
from .gqa import write_gqa
from .language import answer_question, caption_matches, region_phrases, sample_questions
from .vg import write_vg
from .vqa import write_vqa

__all__ = [
    "WORLD_FOLDER",
    "WorldConfig",
    "answer_question",
    "caption_matches",
    "region_phrases",
    "sample_questions",
    "write_world",
]


WORLD_FOLDER = "world"  # where a run directory keeps its sample world (${SAMPLE_WORLD})


@dataclass
class WorldConfig:
    """Size and seed of the sample world; the defaults write ~1,900 images in a few seconds. A manifest's
    ``sample_world`` section is this; its seed, unset, is the manifest's."""

    seed: int | None = None  # None: 0 (a manifest's: the manifest's seed)
    image_size: int = ranged(128, ge=32)  # square canvas, pixels
    min_objects: int = ranged(1, ge=1, le=9)
    max_objects: int = ranged(4, ge=1, le=9)  # at most 9: one object per cell of a 3x3 grid
    vg_images: int = ranged(600, ge=0)
    gqa_images: int = ranged(400, ge=0)  # split ~85/10/5 into train / val / test
    vqa_train_images: int = ranged(600, ge=0)
    vqa_val_images: int = ranged(100, ge=0)
    cc3m_images: int = ranged(200, ge=0)
    cc3m_shards: int = ranged(2, ge=1)
    # img2dataset failed downloads: in the shard parquet, absent from the tar
    cc3m_failed_fraction: float = ranged(0.03, ge=0, le=1)
    regions_per_image: int = ranged(6, ge=1)  # VG region descriptions per image
    qas_per_image: int = ranged(6, ge=1)  # questions per image in VG, GQA and VQA

    def __post_init__(self):
        if self.image_size < 32:
            raise ValueError(f"image_size: must be at least 32, got {self.image_size}")
        if not 1 <= self.min_objects <= self.max_objects <= 9:
            raise ValueError(
                f"min_objects/max_objects: need 1 <= min <= max <= 9, got {self.min_objects}, {self.max_objects}"
            )
        for name in ("vg_images", "gqa_images", "vqa_train_images", "vqa_val_images", "cc3m_images"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0")
        for name in ("cc3m_shards", "regions_per_image", "qas_per_image"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1")
        if not 0.0 <= self.cc3m_failed_fraction <= 1.0:
            raise ValueError("cc3m_failed_fraction: must be in [0, 1]")


def write_world(out_dir: str | Path, cfg: WorldConfig | None = None) -> dict:
    """Write the whole world to ``out_dir`` and return the counts summary (also in ``world.json``).

    The world is built in a temporary sibling directory and renamed into place, so ``out_dir`` is either
    absent, the previous world, or the complete new one. An existing non-world directory is never replaced.
    """
    cfg = cfg or WorldConfig()
    if cfg.seed is None:
        cfg = replace(cfg, seed=0)
    out = Path(out_dir)
    check_replaceable(out)
    with atomic_dir(out) as tmp:
        counts = {
            "vg": write_vg(tmp, cfg),
            "gqa": write_gqa(tmp, cfg),
            "vqa": write_vqa(tmp, cfg),
            "cc3m": write_cc3m(tmp, cfg),
        }
        dump_json(
            tmp / "world.json",
            {"format": "jade-sampleworld/1", "config": asdict(cfg), "counts": counts},
            indent=2,
        )
    return counts
