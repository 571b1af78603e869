"""The paper table's benchmarks and baselines: the sample world writes the benchmarks beside the run (its own
random streams), every benchmark image is checked against every image of the run's world, and the chance or
trivial baseline of each metric is computed from the files (`models.pretrain.chance`)."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

from jade.app.pretrain import vqa_files
from jade.models.pretrain import chance
from jade.models.pretrain.benchmarks import load_captions, load_refs
from jade.models.pretrain.config import PretrainConfig
from jade.sampleworld.benchmarks import BenchConfig, ensure_benchmarks


def _hashes(folder: Path) -> set[str]:
    """sha256 of every JPEG under ``folder``, inside webdataset tars too."""
    out = set()
    for p in folder.rglob("*"):
        if p.suffix == ".jpg":
            out.add(hashlib.sha256(p.read_bytes()).hexdigest())
        elif p.suffix == ".tar":
            with tarfile.open(p) as tar:
                for m in tar:
                    if m.name.endswith(".jpg") and (f := tar.extractfile(m)) is not None:
                        out.add(hashlib.sha256(f.read()).hexdigest())
    return out


def overlap(bench: Path, world: Path) -> dict:
    """How many benchmark images are byte-identical to an image of the run's world (CC3M-like, VG, GQA, VQA v2
    train and val): the factory's inputs and the fine-tunes' training images."""
    ours, theirs = _hashes(bench), _hashes(world) if world.is_dir() else set()
    return {"benchmark_images": len(ours), "world_images": len(theirs), "identical": len(ours & theirs)}


def benchmarks_for(run_dir: Path, sizes: dict, out: Path) -> tuple[Path, dict]:
    """The benchmarks for ``run_dir`` (the world's seed; ``sizes`` over the defaults) in ``out``, and their
    overlap with the run's world (an error if any image is shared)."""
    seed = json.loads((run_dir / "run.json").read_text()).get("seed", 0)
    ensure_benchmarks(out, BenchConfig(seed=seed, **sizes))
    found = overlap(out, run_dir / "world")
    if found["identical"]:
        raise RuntimeError(f"{out}: {found['identical']} benchmark images are also images of {run_dir}/world")
    return out, found


def chance_baselines(run_dir: Path, bench: Path, cfg: PretrainConfig) -> dict:
    """chance.<metric> for the table (and the constant caption and box, for the record)."""
    ds = cfg.downstream
    test = load_captions(bench, "captest", 8)
    per_image = round(sum(len(r) for r in test.refs) / len(test))
    out: dict = {}
    for k in (1, 5, 10):
        out[f"retrieval_i2t_r{k}"], out[f"retrieval_t2i_r{k}"] = chance.retrieval_chance(
            len(test), per_image, k
        )
    train = load_captions(bench, "captrain", 8)
    caption, out["cider"] = chance.constant_caption_cider(train.refs, test.refs[: ds.caption_images])
    ref_test = load_refs(bench, "reftest", 8, ds.region_refs)
    out["region_accuracy"] = chance.random_candidate(ref_test.candidates, ref_test.boxes)
    box, out["region_constant_box"] = chance.constant_box_accuracy(
        load_refs(bench, "reftrain", 8).boxes, ref_test.boxes
    )
    files = vqa_files(run_dir)
    out["vqa_accuracy"] = (
        chance.vqa_prior(files["annotations"], files["val_annotations"], cfg.vqa_eval_questions)
        if files
        else None
    )
    out["constant_caption"], out["constant_box"] = caption, box
    return out
