"""Which dense captions to keep: rules measured on VG images of a fresh world, never on `jade eval`'s truth.

The generator samples dense captions of an image (a box and a caption each); `models.regions` decides which
boxes are kept. This probe chooses that rule on data the evaluation never sees: the Visual Genome split of a
sample world written with a seed no run uses (`--world-seed`, default 1000), whose objects (VG's objects and
attributes, with their grid cell) are the truth. It draws many captions per image once (`sample`), then
scores each rule on the first n draws for several n (`score`) with `jade eval`'s own test (IoU >= 0.5 and a
caption naming the object's colour and shape): precision of the kept regions and recall of the true objects.
The draws use `generate`'s engine and seeding (each sample's noise depends on its own number only), so the first n
of N draws are the draws of a request for n.

    python -m research.regions sample runs/sample/checkpoints/generator runs/regions/draws.json [--images 200]
    python -m research.regions score runs/regions/draws-s0.json [draws-s1.json ...] [--n 8,12,16] [--support 2,3]
        [--words 0.5] [--rank score,support] [--dedup 0.7,0.3] [--md]

`generated` measures (it chooses nothing): the regions a run's `generate` stage kept, scored by `jade eval`'s
own `score` against the run's truth, for a run whose later stages have not run (`jade eval` needs the
published dataset; the regions it publishes are these):

    python -m research.regions generated runs/sample
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from jade.models.regions import RegionRule, select_regions
from jade.models.tasks import parse_caption
from jade.reports.evaluate import found_objects

# The rule `make generate` used before issue 28 (manifests/sample.yaml): another draw must agree.
BEFORE = RegionRule(support=1, support_words=0.5, caption="consensus", dedup_iou=0.7)


def sample(checkpoint: str, out: str, world_seed: int, images: int, n: int, seed: int, threads: int) -> None:
    from PIL import Image

    from jade.models import tasks
    from jade.models.backends import EngineOptions, make_backend
    from jade.models.backends.base import Request
    from jade.pipeline.seeds import derive_seed
    from jade.sampleworld import WorldConfig, write_world

    world = Path(out).parent / f"world-{world_seed}"
    if not world.exists():
        sizes = dict(gqa_images=0, vqa_train_images=0, vqa_val_images=0, cc3m_images=0, cc3m_shards=1)
        write_world(world, WorldConfig(seed=world_seed, vg_images=images, **sizes))
    truth = json.loads((world / "truth" / "vg_scene_graphs.json").read_text())
    ids = list(truth)[:images]
    backend = make_backend("hf", checkpoint, EngineOptions(256, threads))
    draws: dict[str, list] = {}
    t0 = time.time()
    for start in range(0, len(ids), 16):
        batch = ids[start : start + 16]
        pics = []
        for i in batch:
            folder = "VG_100K" if int(i) % 2 else "VG_100K_2"
            with Image.open(world / "vg" / folder / f"{i}.jpg") as f:
                pics.append(f.convert("RGB"))
        reqs = [
            Request(
                k,
                tasks.CAPTION_PROMPT,
                20,
                n=n,
                greedy=False,
                top_k=20,
                temperature=1.0,
                seed=derive_seed(seed, "generate", "dev", i, "caption"),
            )
            for k, i in enumerate(batch)
        ]
        for i, comps in zip(batch, backend.generate(backend.prepare(pics), reqs), strict=True):
            draws[i] = [[c.text, c.score] for c in comps]
        print(f"{len(draws)} images, {time.time() - t0:.0f} s", file=sys.stderr)
    Path(out).write_text(json.dumps({"world": str(world), "n": n, "draws": draws}))


def score_rule(draws: dict, truth: dict, n: int, rule: RegionRule) -> dict:
    """Precision, recall and regions per image of `rule` on the first n draws of every image."""
    from jade.reports.evaluate import check_region

    regions = Counter()
    objects: Counter = Counter()
    for i, texts in draws.items():
        parsed = [(s, p) for t, s in texts[:n] if (p := parse_caption(t)) is not None]
        kept, _ = select_regions(parsed, rule)
        regions.update(check_region(r, truth[i]) for r in kept)
        true, found = found_objects(kept, truth[i])
        objects.update(true=true, found=found)
        objects.update({f"true.{true}": true, f"found.{true}": found})
    k = regions[True] + regions[False]
    return {
        "precision": regions[True] / k if k else None,
        "recall": objects["found"] / objects["true"],
        "regions_per_image": k / len(draws),
        "recall_by_objects": {
            m: objects[f"found.{m}"] / objects[f"true.{m}"] for m in range(1, 10) if objects[f"true.{m}"]
        },
    }


def rules(
    supports: list[int],
    words: list[float],
    ranks: tuple[str, ...] = ("score",),
    dedups: tuple[float, ...] = (0.7,),
) -> dict[str, RegionRule]:
    """The rules compared: every box, the rule before, boxes alone, and a grid of support x caption agreement
    (``--support``, ``--words``) x which of two near-duplicates is kept (``--rank``) x the overlap that makes
    two boxes near-duplicates (``--dedup``), all with the consensus caption."""
    out = {
        "every box": RegionRule(caption="best"),
        "support 1, words 0.5 (before)": BEFORE,
        "support 1, boxes only": replace(BEFORE, support_words=0.0),
    }
    for k in supports:
        for w in words:
            for r in ranks:
                for d in dedups:
                    name = f"support {k}, words {w}" + (f", rank {r}" if r != "score" else "")
                    name += f", dedup {d}" if d != BEFORE.dedup_iou else ""
                    out.setdefault(name, replace(BEFORE, support=k, support_words=w, rank=r, dedup_iou=d))
    return out


# How `generate`'s rule is chosen from the probe's tables (never from `jade eval`): the rules that reach precision
# >= 0.91 and recall >= 0.87 on the probe of every generator given (a margin over issue 28's targets, 0.90 and
# 0.85, since the probe's world is not the evaluation's), and of those the one whose smallest margin (over the
# generators and the two targets) is largest; fewer draws break a tie. The margins were set after the probe's
# first table (the 8-32 draw rows of seed 0's generator), before any run of it. Until the probes of seeds 1 and 2
# the rule took the fewest draws that qualify, then the largest margin; draws turned out cheap (the `generate`
# stage is seconds of a `make generate`), and the fewest draws leave no margin on two generators of three.
TARGET = {"precision": 0.91, "recall": 0.87}


def margin(results: list[dict]) -> float | None:
    """The smallest margin over the targets of one rule's results on every generator; None when a result has
    no region at all."""
    if any(r["precision"] is None for r in results):
        return None
    return min(r[k] - v for r in results for k, v in TARGET.items())


def choose(rows: list[tuple[str, int, list[dict]]]) -> tuple[str, int, list[dict]] | None:
    """The chosen (rule, draws, results per generator), or None when no rule reaches the targets on every
    generator."""
    ok = [r for r in rows if (m := margin(r[2])) is not None and m >= 0]
    return max(ok, key=lambda r: (margin(r[2]), -r[1])) if ok else None


def objects_overlap(truth: dict) -> float:
    """The largest IoU of two true objects of one image: how much boxes of two objects can overlap in the
    data (a near-duplicate threshold above it never merges two objects)."""
    from itertools import combinations

    from jade.models.tasks import iou
    from jade.reports.evaluate import truth_boxes

    pairs = (p for g in truth.values() for p in combinations(truth_boxes(g), 2))
    return max((iou(a, b) for a, b in pairs), default=0.0)


def score(
    paths: list[str],
    ns: list[int],
    md: bool,
    supports: list[int],
    words: list[float],
    ranks: tuple[str, ...] = ("score",),
    dedups: tuple[float, ...] = (0.7,),
) -> None:
    """One table per draws file (one per generator), then the rule `choose` picks over all of them."""
    grid = rules(supports, words, ranks, dedups)
    results: dict[tuple[str, int], list[dict]] = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        truth = json.loads((Path(data["world"]) / "truth" / "vg_scene_graphs.json").read_text())
        print(f"{path}: objects of one image overlap at most IoU {objects_overlap(truth):.2f}")
        if md:
            print("| rule | draws | precision | recall | regions / image | recall by objects in the scene |")
            print("|---|---|---|---|---|---|")
        for name, rule in grid.items():
            for n in ns:
                r = score_rule(data["draws"], truth, n, rule)
                results.setdefault((name, n), []).append(r)
                by = ", ".join(f"{m}: {v:.3f}" for m, v in r["recall_by_objects"].items())
                cells = [
                    name,
                    str(n),
                    "n/a" if r["precision"] is None else f"{r['precision']:.3f}",
                    f"{r['recall']:.3f}",
                    f"{r['regions_per_image']:.2f}",
                    by,
                ]
                print(("| " + " | ".join(cells) + " |") if md else "  ".join(cells), flush=True)
    best = choose([(name, n, rs) for (name, n), rs in results.items()])
    if best:
        each = "; ".join(f"{r['precision']:.3f} / {r['recall']:.3f}" for r in best[2])
        print(
            f"chosen: {best[0]}, {best[1]} draws (precision / recall: {each}; margin {margin(best[2]):.3f})"
        )
    else:
        print("chosen: none reaches the targets")


def generated(run: str) -> dict:
    """`jade eval`'s region numbers of the regions in ``run``'s `_work/generate/` (every usable image)."""
    import pyarrow.parquet as pq

    from jade.reports.evaluate import score as eval_score

    root = Path(run)
    truth = json.loads((root / "world" / "truth" / "cc3m_scene_graphs.json").read_text())
    source = {
        r["key"]: r["source_key"]
        for f in sorted((root / "_work" / "dedupe").glob("*.parquet"))
        for r in pq.read_table(f, columns=["key", "source_key"]).to_pylist()
    }
    rows = [
        {"key": r["key"], "qa": [], "regions": r["regions"]}
        for f in sorted((root / "_work" / "generate").glob("*.parquet"))
        for r in pq.read_table(f, columns=["key", "regions"]).to_pylist()
        if source.get(r["key"]) in truth
    ]
    r = eval_score({row["key"]: truth[source[row["key"]]] for row in rows}, rows, [])
    keys = (
        "images",
        "region_precision",
        "region_recall",
        "objects_true",
        "objects_found",
        "regions_per_image",
    )
    return {k: r[k] for k in keys} | {"region_recall_by_objects": r["region_recall_by_objects"]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m research.regions")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("checkpoint")
    s.add_argument("out")
    s.add_argument("--world-seed", type=int, default=1000)
    s.add_argument("--images", type=int, default=200)
    s.add_argument("--n", type=int, default=32)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=2)
    c = sub.add_parser("score")
    c.add_argument("draws", nargs="+", help="one draws file per generator; the rule is chosen on all of them")
    c.add_argument("--n", default="8,12,16,24,32")
    c.add_argument("--md", action="store_true")
    c.add_argument("--support", default="2", help="supports of the grid, comma-separated")
    c.add_argument("--words", default="0.5", help="caption agreements (word F1) of the grid")
    c.add_argument("--rank", default="score", help="near-duplicate ranks of the grid: score, support")
    c.add_argument("--dedup", default="0.7", help="near-duplicate IoUs of the grid")
    g = sub.add_parser("generated")
    g.add_argument("run")
    a = p.parse_args(argv)
    if a.cmd == "generated":
        print(json.dumps(generated(a.run), indent=2))
    elif a.cmd == "sample":
        sample(a.checkpoint, a.out, a.world_seed, a.images, a.n, a.seed, a.threads)
    else:
        supports = [int(x) for x in a.support.split(",")]
        score(
            a.draws,
            [int(x) for x in a.n.split(",")],
            a.md,
            supports,
            [float(x) for x in a.words.split(",")],
            tuple(a.rank.split(",")),
            tuple(float(x) for x in a.dedup.split(",")),
        )


if __name__ == "__main__":
    main()
