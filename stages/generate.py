"""Generate, as JADE does it: per image, dense captions by top-K sampling (a box and a caption each), typed
questions by top-K sampling (per-type counts from the manifest), then an answer to each by greedy decoding.

Under `generate.condition: region` the questions are asked about regions instead, as JADE's generator asks them:
for each kept dense-caption region, `generate.region_questions` questions per JADE type (binary, what, where,
how, ...), each prompt carrying the type, the region's box as location tokens and its caption; every such pair
carries its `region` and `jade_type` to the end.

Near-duplicate boxes (IoU above `generate.box_dedup_iou` with a better box, `generate.region_rank`) are
dropped; duplicate questions of an image are kept with status "duplicate question" so the filter records them
as rejections: every sampled question ends up kept or in rejected/, never silently lost.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import pyarrow as pa

from jade.formats.run_tables import GENERATED, load_images
from jade.formats.samples import ShardRef
from jade.models import tasks
from jade.models.backends import EngineOptions, backend_names, make_backend
from jade.models.backends.base import Request
from jade.models.factory import JADE_META
from jade.models.regions import RegionRule, select_regions
from jade.models.vqa_normalize import normalize_answer
from jade.pipeline.resources import StageResources
from jade.pipeline.rundir import RunDir
from jade.pipeline.seeds import derive_seed
from jade.pipeline.stage import Runtime, ShardFiles, ShardResult, ShardStage, StageFiles
from jade.typed import ConfigError, ranged, since, validate_choice

__all__ = [
    "CONDITIONS",
    "Generate",
    "GenerateConfig",
    "GenerateSettings",
    "Generator",
    "MaxTokens",
    "region_rule",
]

log = logging.getLogger("jade")
CONDITIONS = ("type", "region")  # what a question is conditioned on: its VQA answer type, or one kept region


@dataclass
class MaxTokens:
    caption: int = ranged(20, ge=1)
    question: int = ranged(20, ge=1)
    answer: int = ranged(8, ge=1)


@dataclass
class GenerateConfig:
    """The manifest's ``generate`` section."""

    backend: str = "hf"  # a registered backend (`models.backends`): hf | vllm | fake
    captions: int = ranged(6, ge=0)  # dense-caption samples per image (top-K), before near-duplicate removal
    questions: dict[str, int] = field(default_factory=lambda: {"yes/no": 3, "number": 2, "other": 4})
    top_k: int = ranged(20, ge=1)
    temperature: float = ranged(1.0, gt=0)
    max_new_tokens: MaxTokens = field(default_factory=MaxTokens)
    # boxes overlapping a better kept box (`region_rank`) by more are dropped
    box_dedup_iou: float = ranged(0.7, ge=0, le=1)
    # self-consistency of dense captions: a sampled box is kept only when at least this many of the image's
    # other samples propose a box overlapping it (IoU >= 0.5); 0 keeps every box (JADE's rule). A box the model
    # is sure of comes back across samples; a stray draw comes once. A kept box is the mean of the boxes that
    # agree with it (box fusion), which steadies its edges.
    region_support: int = ranged(0, ge=0)
    # the caption of a kept box (with region_support): `best`, the highest-scored sample's, or `consensus`, the
    # one that agrees most with the captions of the samples whose boxes agree with it (minimum Bayes risk
    # selection under word F1): a colour or a shape that one draw got wrong is outvoted by the others
    region_caption: str = "best"
    # with region_support: a sample supports a box only when its caption also shares at least this word F1
    # with the box's caption (articles ignored); 0: any caption (boxes alone agree)
    region_support_words: float = ranged(0.0, ge=0, le=1)
    # type: questions per VQA answer type (`questions`); region: per kept dense-caption region, questions per
    # JADE type (`region_questions`), the prompt carrying the region's box and caption (the generator then also
    # learns the region_question task). Added after runs were made: fingerprinted only when not the default.
    condition: str = since("issue-28", "type")
    region_questions: dict[str, int] = since(
        "issue-28", default_factory=lambda: {"binary": 2, "what": 1, "where": 1, "how": 1}
    )
    # which of two near-duplicate kept boxes is better (with region_support): `score`, the higher-scored, or
    # `support`, the one more samples agree with (then score). Added after runs were made.
    region_rank: str = since("issue-28", "score")

    def validate(self, at: str) -> None:
        validate_choice(self.backend, backend_names(), f"{at}.backend")
        validate_choice(self.region_caption, ("best", "consensus"), f"{at}.region_caption")
        validate_choice(self.region_rank, ("score", "support"), f"{at}.region_rank")
        validate_choice(self.condition, CONDITIONS, f"{at}.condition")
        for jtype, n in self.region_questions.items():
            validate_choice(jtype, tasks.JADE_TYPES, f"{at}.region_questions")
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ConfigError(f"{at}.region_questions.{jtype}: expected a non-negative integer, got {n!r}")
        if self.condition == "region" and not self.captions:
            raise ConfigError(f"{at}.condition: region asks questions about dense-caption regions; captions is 0")
        for qtype, n in self.questions.items():
            validate_choice(qtype, tasks.QUESTION_TYPES, f"{at}.questions")
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ConfigError(f"{at}.questions.{qtype}: expected a non-negative integer, got {n!r}")
        if self.region_support >= max(1, self.captions):
            raise ConfigError(
                f"{at}.region_support: must be between 0 and captions - 1 ({self.captions - 1}), "
                f"got {self.region_support}"
            )


@dataclass(frozen=True)
class GenerateSettings:
    generate: GenerateConfig
    seed: int


class Generator:
    """Per-shard worker: loads the generator once (per actor), then annotates whole shards."""

    def __init__(self, stage: Generate, run: RunDir, runtime: Runtime):
        self.run, self.samples = run, stage.samples
        self.g, self.seed = stage.settings.generate, stage.settings.seed
        self.batch_size = runtime.batch_size
        self.backend = make_backend(
            self.g.backend,
            str(run.local_dir(run.rel(stage.model), JADE_META)),  # a local copy when on a store
            EngineOptions(stage.decode_rows, runtime.threads, stage.trust_remote_code),
        )

    def __call__(self, shard: ShardRef) -> ShardResult:
        keys = self.run.read_table(self.samples, shard.shard_id, columns=["key"]).column(0).to_pylist()
        rows: list[dict] = []
        stats: Counter[str] = Counter()
        by_type: defaultdict[str, Counter[str]] = defaultdict(Counter)
        batch: list = []
        for entry in load_images(shard, set(keys)):
            batch.append(entry)
            if len(batch) == self.batch_size:
                rows += self.annotate(shard.shard_id, batch, stats, by_type)
                batch = []
        if batch:
            rows += self.annotate(shard.shard_id, batch, stats, by_type)
        counts: dict = dict(stats)
        counts["by_type"] = {t: dict(by_type[t]) for t in tasks.QUESTION_TYPES if by_type[t]}
        table = pa.Table.from_pylist(rows, schema=GENERATED)
        return ShardResult({Generate.OUTPUT.path(shard.shard_id): table}, counts, len(rows))

    def annotate(self, shard_id: str, batch: list, stats: Counter, by_type: defaultdict) -> list[dict]:
        g, seed = self.g, self.seed
        # Through the vision encoder once: every call below (samples, questions, answers) reuses the features.
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
            if g.condition == "type":
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
        questions: list[list] = [[] for _ in batch]  # (question, VQA type, score, JADE type, region)
        for (i, kind, asked), comps in zip(owners, outs, strict=True):
            if kind == "caption":
                regions[i] = self._regions(comps, stats)
            else:
                questions[i] += [(tasks.clean_text(c.text), asked, c.score, None, None) for c in comps]
        if g.condition == "region":
            self._region_questions(shard_id, batch, images, regions, questions)
        # Greedy answers to every distinct question of the batch, decoded together.
        qa_rows: list[list[dict]] = [[] for _ in batch]
        answer_reqs, answer_owner = [], []
        for i, qs in enumerate(questions):
            seen = set()
            for q, qtype, score, jtype, region in qs:
                stats["questions_generated"] += 1
                by_type[qtype]["questions_generated"] += 1
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
                        "jade_type": jtype,
                        "region": region,
                    }
                )
                if status == "ok":
                    answer_reqs.append(Request(i, tasks.answer_prompt(q), g.max_new_tokens.answer))
                    answer_owner.append(qa_rows[i][-1])
        for row, comps in zip(answer_owner, self.backend.generate(images, answer_reqs), strict=True):
            row["answer"], row["answer_score"] = tasks.clean_text(comps[0].text), comps[0].score
        return [{"key": key, "qa": qa_rows[i], "regions": regions[i]} for i, (key, _, _) in enumerate(batch)]

    def _region_questions(self, shard_id: str, batch: list, images, regions: list, questions: list) -> None:
        """Questions about each kept region (condition region): per JADE type, `region_questions` samples of the
        prompt "question <type> <box> <caption>"; their VQA type is read from the type and the question."""
        g, seed = self.g, self.seed
        reqs: list[Request] = []
        owners: list[tuple[int, str, dict]] = []
        for i, (key, _, _) in enumerate(batch):
            for k, r in enumerate(regions[i]):
                region = {"bbox": list(r["bbox"]), "caption": r["caption"]}
                for jtype, n in g.region_questions.items():
                    if n:
                        prompt = tasks.region_question_prompt(jtype, tuple(r["bbox"]), r["caption"])
                        rseed = derive_seed(seed, "generate", shard_id, key, "region", k, jtype)
                        reqs.append(self._sample(i, prompt, n, "question", rseed))
                        owners.append((i, jtype, region))
        if not reqs:
            return
        for (i, jtype, region), comps in zip(owners, self.backend.generate(images, reqs), strict=True):
            for c in comps:
                q = tasks.clean_text(c.text)
                questions[i].append((q, tasks.vqa_type(jtype, q), c.score, jtype, region))

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
        """Parse sampled dense captions (malformed ones are counted and dropped), then keep the boxes that
        `models.regions.select_regions` keeps under the manifest's rule."""
        parsed = []
        for c in comps:
            stats["regions_generated"] += 1
            p = tasks.parse_caption(c.text)
            if p is None:
                stats["regions_malformed"] += 1
            else:
                parsed.append((c.score, p))
        kept, dropped = select_regions(parsed, region_rule(self.g))
        stats.update(dropped)
        stats["regions_kept"] += len(kept)
        return kept


def region_rule(g: GenerateConfig) -> RegionRule:
    """The manifest's dense-caption keep rule (`generate.region_*`, `generate.box_dedup_iou`)."""
    return RegionRule(
        g.region_support, g.region_support_words, g.region_caption, g.box_dedup_iou, g.region_rank
    )


class Generate(ShardStage):
    name = "generate"
    OUTPUT = ShardFiles(
        "_work/generate/{shard}.parquet"
    )  # per image: sampled regions and QA pairs (`GENERATED`)
    outputs = (OUTPUT,)

    def __init__(
        self,
        settings: GenerateSettings,
        samples: ShardFiles,
        model: StageFiles,
        resources: StageResources,
        decode_rows: int = 256,
        trust_remote_code: bool = False,
    ):
        self.settings, self.samples, self.model, self.resources = settings, samples, model, resources
        self.decode_rows, self.trust_remote_code = decode_rows, trust_remote_code
        self.inputs = (samples, model)

    def worker(self, run: RunDir, runtime: Runtime) -> Generator:
        return Generator(self, run, runtime)
