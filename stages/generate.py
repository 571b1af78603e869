"""Generate, as JADE does it: per image, dense captions by top-K sampling (a box and a caption each), typed
questions by top-K sampling (per-type counts from the manifest), then an answer to each by greedy decoding.

Near-duplicate boxes (IoU above `generate.box_dedup_iou` with a higher-scoring box) are dropped; duplicate
questions of an image are kept with status "duplicate question" so the filter records them as rejections:
every sampled question ends up kept or in rejected/, never silently lost.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from jade.formats.run_tables import GENERATED, load_images
from jade.formats.samples import ShardRef
from jade.models import tasks
from jade.models.backends import make_backend
from jade.models.backends.base import Request
from jade.models.vqa_normalize import normalize_answer
from jade.pipeline import config
from jade.pipeline.config import Manifest, StageResources
from jade.pipeline.rundir import RunDir
from jade.pipeline.seeds import derive_seed
from jade.pipeline.stage import Runtime, ShardResult

log = logging.getLogger("jade")


@dataclass(frozen=True)
class GenerateSettings:
    generate: config.Generate
    seed: int


def usable_keys(run: RunDir, shard_id: str) -> list[str]:
    return pq.read_table(run.work("dedupe") / f"{shard_id}.parquet", columns=["key"]).column(0).to_pylist()


_ARTICLES = frozenset(("a", "an", "the"))


def _words(caption: str) -> Counter:
    return Counter(w for w in caption.lower().split() if w not in _ARTICLES)


def _f1(a: Counter, b: Counter) -> float:
    common = sum((a & b).values())
    return 2 * common / (sum(a.values()) + sum(b.values())) if common else 0.0


def consensus(samples: list[tuple[float, tuple]]) -> str:
    """The caption that agrees most with the others of a group of samples (minimum Bayes risk selection under
    word F1, articles ignored); ties go to the higher-scored sample."""
    words = [_words(caption) for _, (_, caption) in samples]
    best = max(
        range(len(samples)),
        key=lambda i: (sum(_f1(words[i], w) for j, w in enumerate(words) if j != i), samples[i][0]),
    )
    return samples[best][1][1]


class Generator:
    """Per-shard worker: loads the generator once (per actor), then annotates whole shards."""

    def __init__(self, run: RunDir, settings: GenerateSettings, runtime: Runtime):
        self.run, self.g, self.seed = run, settings.generate, settings.seed
        self.batch_size = runtime.batch_size
        self.backend = make_backend(
            self.g.backend, str(run.checkpoint("generator")), runtime.decode_rows, runtime.threads
        )

    def __call__(self, shard: ShardRef) -> ShardResult:
        keys = usable_keys(self.run, shard.shard_id)
        rows: list[dict] = []
        stats: Counter[str] = Counter()
        batch: list = []
        for entry in load_images(shard, set(keys)):
            batch.append(entry)
            if len(batch) == self.batch_size:
                rows += self.annotate(shard.shard_id, batch, stats)
                batch = []
        if batch:
            rows += self.annotate(shard.shard_id, batch, stats)
        counts: dict = {k: v for k, v in stats.items() if "." not in k}
        counts["by_type"] = {
            t: {"questions_generated": stats[f"questions_generated.{t}"]}
            for t in config.QUESTION_TYPES
            if stats[f"questions_generated.{t}"]
        }
        table = pa.Table.from_pylist(rows, schema=GENERATED)
        return ShardResult({f"_work/generate/{shard.shard_id}.parquet": table}, counts, len(rows))

    def annotate(self, shard_id: str, batch: list, stats: Counter) -> list[dict]:
        g, seed = self.g, self.seed
        # Through the vision encoder once: both calls below (samples, then answers) reuse the features.
        images = self.backend.prepare([img for _, img, _ in batch])
        reqs: list[Request] = []
        owners: list[tuple[int, str, str | None]] = []
        for i, (key, _, _) in enumerate(batch):
            if g.captions:
                reqs.append(
                    self._sample(
                        i,
                        tasks.CAPTION_PROMPT,
                        g.captions,
                        "caption",
                        derive_seed(seed, "generate", shard_id, key, "caption"),
                    )
                )
                owners.append((i, "caption", None))
            for qtype, n in g.questions.items():
                if n:
                    reqs.append(
                        self._sample(
                            i,
                            tasks.question_prompt(qtype),
                            n,
                            "question",
                            derive_seed(seed, "generate", shard_id, key, "question", qtype),
                        )
                    )
                    owners.append((i, "question", qtype))
        outs = self.backend.generate(images, reqs)
        regions: list[list] = [[] for _ in batch]
        questions: list[list] = [[] for _ in batch]
        for (i, kind, asked), comps in zip(owners, outs, strict=True):
            if kind == "caption":
                regions[i] = self._regions(comps, stats)
            else:
                questions[i] += [(tasks.clean_text(c.text), asked, c.score) for c in comps]
        # Greedy answers to every distinct question of the batch, decoded together.
        qa_rows: list[list[dict]] = [[] for _ in batch]
        answer_reqs, answer_owner = [], []
        for i, qs in enumerate(questions):
            seen = set()
            for q, qtype, score in qs:
                stats["questions_generated"] += 1
                stats[f"questions_generated.{qtype}"] += 1
                status = "ok"
                norm = normalize_answer(q)
                if not q or not norm:
                    status = "empty question"
                elif norm in seen:
                    status = "duplicate question"
                seen.add(norm)
                qa_rows[i].append(
                    {
                        "question": q,
                        "type": qtype,
                        "answer": None,
                        "question_score": score,
                        "answer_score": None,
                        "status": status,
                    }
                )
                if status == "ok":
                    answer_reqs.append(Request(i, tasks.answer_prompt(q), g.max_new_tokens.answer))
                    answer_owner.append(qa_rows[i][-1])
        for row, comps in zip(answer_owner, self.backend.generate(images, answer_reqs), strict=True):
            row["answer"], row["answer_score"] = tasks.clean_text(comps[0].text), comps[0].score
        return [{"key": key, "qa": qa_rows[i], "regions": regions[i]} for i, (key, _, _) in enumerate(batch)]

    def _sample(self, image: int, prompt: str, n: int, kind: str, seed: int) -> Request:
        g = self.g
        return Request(
            image,
            prompt,
            getattr(g.max_new_tokens, kind),
            n=n,
            greedy=False,
            top_k=g.top_k,
            temperature=g.temperature,
            seed=seed,
        )

    def _regions(self, comps, stats: Counter) -> list[dict]:
        """Parse sampled dense captions; drop malformed ones, boxes too few other samples agree with
        (`generate.region_support`; a kept box is then the mean of those that agree) and near-duplicate boxes
        (best score first)."""
        parsed = []
        for c in comps:
            stats["regions_generated"] += 1
            p = tasks.parse_caption(c.text)
            if p is None:
                stats["regions_malformed"] += 1
            else:
                parsed.append((c.score, p))
        if self.g.region_support:
            # each box's agreeing samples (itself included); a kept box becomes their mean (box fusion) and,
            # with `region_caption: consensus`, takes the caption those samples agree on most
            boxes = [box for _, (box, _) in parsed]
            words = [_words(caption) for _, (_, caption) in parsed]
            agree = [
                [
                    j
                    for j, o in enumerate(boxes)
                    if tasks.iou(b, o) >= 0.5
                    and (i == j or _f1(words[i], words[j]) >= self.g.region_support_words)
                ]
                for i, b in enumerate(boxes)
            ]
            stats["regions_unsupported"] += sum(len(a) <= self.g.region_support for a in agree)
            fused = []
            for (score, (_, caption)), a in zip(parsed, agree, strict=True):
                if len(a) <= self.g.region_support:
                    continue
                box = tuple(sum(c) / len(a) for c in zip(*(boxes[j] for j in a), strict=True))
                if self.g.region_caption == "consensus":
                    caption = consensus([parsed[j] for j in a])
                fused.append((score, (box, caption)))
            parsed = fused
        kept: list[dict] = []
        for score, (box, caption) in sorted(parsed, key=lambda t: -t[0]):
            if any(tasks.iou(box, k["bbox"]) > self.g.box_dedup_iou for k in kept):
                stats["regions_duplicate"] += 1
                continue
            kept.append({"bbox": list(box), "caption": caption, "score": score})
        stats["regions_kept"] += len(kept)
        return kept


class Generate:
    name = "generate"
    after = ("dedupe", "finetune_generator")

    def settings(self, m: Manifest) -> GenerateSettings:
        return GenerateSettings(m.generate, m.seed)

    def resources(self, m: Manifest) -> StageResources:
        return m.resources.generate

    def owns(self, shard_id: str) -> list[str]:
        return [f"_work/generate/{shard_id}.parquet"]

    def worker(self, run: RunDir, settings: GenerateSettings, runtime: Runtime) -> Generator:
        return Generator(run, settings, runtime)
