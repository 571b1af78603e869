"""Manifests: YAML recipes loaded into typed, validated config objects.

Every error names the offending key by its dotted path (``generate.top_k``) or the missing file, and is raised
before any work starts. ``${VAR}`` reads an environment variable; an unset one is an error naming it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jade.models.pretrain.config import PretrainConfig
from jade.models.specs import Architecture, Training
from jade.typed import ConfigError, build, validate_choice

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the package root (the checkout, or site-packages/jade)
MANIFEST_DIR = PACKAGE_DIR / "manifests"
# ${JADE_BASES}: the pretrained bases shipped with the package (models/bases/<name>)
BASES_DIR = PACKAGE_DIR / "models" / "bases"
QUESTION_TYPES = ("yes/no", "number", "other")


ManifestError = ConfigError  # an invalid manifest; the message names the key or path


# --------------------------------------------------------------------------------------------------- schema
@dataclass
class ImagesSource:
    format: str = "webdataset"  # webdataset | parquet
    urls: list[str] = field(default_factory=list)  # fsspec URLs, globs, brace ranges

    def validate(self, at: str) -> None:
        _choice(self.format, ("webdataset", "parquet"), f"{at}.format")
        if not self.urls:
            raise ManifestError(f"{at}.urls: at least one URL is required")


@dataclass
class VGSource:
    image_data: str = ""
    regions: str = ""
    images: list[str] = field(default_factory=list)  # VG_100K, VG_100K_2
    qas: str | None = None  # optional


@dataclass
class GQASource:
    questions: list[str] = field(default_factory=list)  # files, dirs or globs (train_all_questions/)
    images: str = ""


@dataclass
class VQASource:
    questions: str = ""
    annotations: str = ""
    images: str = ""  # COCO folder: COCO_train2014_{image_id:012d}.jpg


@dataclass
class Sources:
    images: ImagesSource = field(default_factory=ImagesSource)
    vg: VGSource | None = None
    gqa: GQASource | None = None
    vqa: VQASource | None = None


@dataclass
class SampleWorld:
    """Sizes of the bundled sample world (DESIGN.md section 8). It is written to <out>/world before ingest
    (again only when these settings change); ${SAMPLE_WORLD} in `sources` points there."""

    seed: int | None = None  # default: the manifest seed
    image_size: int = 128
    min_objects: int = 1
    max_objects: int = 4
    vg_images: int = 600
    gqa_images: int = 400
    vqa_train_images: int = 600
    vqa_val_images: int = 100
    cc3m_images: int = 200
    cc3m_shards: int = 2
    cc3m_failed_fraction: float = 0.03
    regions_per_image: int = 6
    qas_per_image: int = 6


@dataclass
class ModelSpec:
    base: str | None = None  # hub id or local path of a pretrained checkpoint; None: train from scratch
    # the attention rule (models.attention) the model is fine-tuned and run under: prefix | image | causal
    attention: str = "prefix"
    architecture: Architecture = field(default_factory=Architecture)
    train: Training = field(default_factory=Training)
    tasks: list[str] = field(default_factory=list)  # caption, question, answer
    data: list[str] = field(default_factory=list)  # training sources: vg, gqa, vqa


@dataclass
class GeneratorSpec(ModelSpec):
    tasks: list[str] = field(default_factory=lambda: ["caption", "question", "answer"])
    data: list[str] = field(default_factory=lambda: ["vg", "gqa"])
    train: Training = field(default_factory=lambda: Training(steps=1500))


@dataclass
class FilterSpec(ModelSpec):
    tasks: list[str] = field(default_factory=lambda: ["answer"])
    data: list[str] = field(default_factory=lambda: ["vqa"])
    train: Training = field(default_factory=lambda: Training(steps=1000))


@dataclass
class Models:
    family: str = "paligemma"  # the from-scratch architecture family
    trust_remote_code: bool = False  # only when the user asks for it here
    generator: GeneratorSpec = field(default_factory=GeneratorSpec)
    filter: FilterSpec = field(default_factory=FilterSpec)

    def validate(self, at: str) -> None:
        _choice(self.family, ("paligemma",), f"{at}.family")
        for role in ("generator", "filter"):
            spec = getattr(self, role)
            _choice(spec.attention, ("prefix", "image", "causal"), f"{at}.{role}.attention")
            for task in spec.tasks:
                _choice(task, ("caption", "question", "answer"), f"{at}.{role}.tasks")
            for src in spec.data:
                _choice(src, ("vg", "gqa", "vqa"), f"{at}.{role}.data")
            if not spec.data:
                raise ManifestError(f"{at}.{role}.data: name at least one training source (vg, gqa, vqa)")


@dataclass
class MaxTokens:
    caption: int = 20
    question: int = 20
    answer: int = 8


@dataclass
class Generate:
    backend: str = "hf"  # hf | vllm
    captions: int = 6  # dense-caption samples per image (top-K), before near-duplicate removal
    questions: dict[str, int] = field(default_factory=lambda: {"yes/no": 3, "number": 2, "other": 4})
    top_k: int = 20
    temperature: float = 1.0
    max_new_tokens: MaxTokens = field(default_factory=MaxTokens)
    box_dedup_iou: float = 0.7  # boxes overlapping an earlier (higher-score) box by more are dropped
    # self-consistency of dense captions: a sampled box is kept only when at least this many of the image's
    # other samples propose a box overlapping it (IoU >= 0.5); 0 keeps every box (JADE's rule). A box the model
    # is sure of comes back across samples; a stray draw comes once. A kept box is the mean of the boxes that
    # agree with it (box fusion), which steadies its edges.
    region_support: int = 0
    # the caption of a kept box (with region_support): `best`, the highest-scored sample's, or `consensus`, the
    # one that agrees most with the captions of the samples whose boxes agree with it (minimum Bayes risk
    # selection under word F1): a colour or a shape that one draw got wrong is outvoted by the others
    region_caption: str = "best"
    # with region_support: a sample supports a box only when its caption also shares at least this word F1
    # with the box's caption (articles ignored); 0: any caption (boxes alone agree)
    region_support_words: float = 0.0

    def validate(self, at: str) -> None:
        _choice(self.backend, ("hf", "vllm"), f"{at}.backend")
        _choice(self.region_caption, ("best", "consensus"), f"{at}.region_caption")
        if not 0.0 <= self.region_support_words <= 1.0:
            raise ManifestError(
                f"{at}.region_support_words: a word F1 between 0 and 1, got {self.region_support_words}"
            )
        for qtype, n in self.questions.items():
            _choice(qtype, QUESTION_TYPES, f"{at}.questions")
            if not isinstance(n, int) or n < 0:
                raise ManifestError(f"{at}.questions.{qtype}: expected a non-negative integer, got {n!r}")
        if self.top_k < 1:
            raise ManifestError(f"{at}.top_k: must be >= 1")
        if not 0 <= self.region_support < max(1, self.captions):
            raise ManifestError(
                f"{at}.region_support: must be between 0 and captions - 1 ({self.captions - 1}), "
                f"got {self.region_support}"
            )


@dataclass
class Filter:
    normalization: str = "vqa"  # vqa (official VQA v2 answer normalization) | none
    match: str = "exact"  # exact: keep iff the normalized answers are equal
    min_score: float = 0.0  # also require the filter's answer probability >= this
    # what a question presupposes (models.presupposition), checked with the filter model: "exists" asks
    # "Is there a red circle?" of every "the red circle", "count" asks "How many red circles are there?" (must
    # be 1), "unique" asks both (a pair is rejected when either fails)
    presupposition: str = "unique"  # none | exists | count | unique

    def validate(self, at: str) -> None:
        _choice(self.normalization, ("vqa", "none"), f"{at}.normalization")
        _choice(self.match, ("exact",), f"{at}.match")
        _choice(self.presupposition, ("none", "exists", "count", "unique"), f"{at}.presupposition")


@dataclass
class StageResources:
    actors: int = 1  # a fixed pool of this many actors, unless min_actors / max_actors are given
    min_actors: int | None = None  # autoscaling pool: Ray Data grows it from min to max as work queues up
    max_actors: int | None = None
    num_cpus: float = 0.5  # fractional by default: whole-CPU actors deadlock Ray Data on 2 cores
    num_gpus: float = 0.0  # fractions let two stages' actors share one GPU
    batch_size: int = 16

    def validate(self, at: str) -> None:
        lo, hi = self.pool()
        if lo < 1 or hi < lo:
            raise ManifestError(f"{at}: need 1 <= min_actors <= max_actors (got {lo}, {hi})")
        if self.num_cpus < 0 or (self.num_gpus or 0) < 0:
            raise ManifestError(f"{at}: num_cpus and num_gpus must be >= 0")

    def pool(self) -> tuple[int, int]:
        """(min, max) actor pool size."""
        return (self.min_actors or self.actors, self.max_actors or max(self.actors, self.min_actors or 1))


@dataclass
class ModelStageResources(StageResources):
    """generate and filter: their actors hold a model, so by default they take a GPU where there is one."""

    num_gpus: float | None = None  # type: ignore[assignment]  # None: 1 per actor when the cluster has GPUs, else 0
    # The most sequences an actor's engine decodes together (hf: rows of a decode batch, of any prompt
    # lengths; vLLM: max_num_seqs). It sets speed and memory only, never the outputs.
    decode_rows: int = 256

    def validate(self, at: str) -> None:
        super().validate(at)
        if self.decode_rows < 1:
            raise ManifestError(f"{at}.decode_rows: must be at least 1, got {self.decode_rows}")


@dataclass
class TrainResources:
    workers: int = 1
    num_cpus: float = 1.0
    use_gpu: bool | None = None  # None: use GPUs when the cluster has them


@dataclass
class Resources:
    ingest: StageResources = field(default_factory=StageResources)
    generate: ModelStageResources = field(default_factory=ModelStageResources)
    filter: ModelStageResources = field(default_factory=ModelStageResources)
    train: TrainResources = field(default_factory=TrainResources)
    threads: int | None = None  # torch threads per process (None: the machine's cores)


@dataclass
class IngestConfig:
    """How image shards are checked."""

    min_image_size: int = 32  # an image with a side shorter than this is unusable ("too small: WxH")
    dedupe: bool = (
        True  # byte-identical images under different keys: later ones are "duplicate image: same as KEY"
    )

    def validate(self, at: str) -> None:
        if self.min_image_size < 1:
            raise ManifestError(f"{at}.min_image_size: must be at least 1")


@dataclass
class Publish:
    embed_images: bool = True
    rows_per_file: int = 5000


@dataclass
class Manifest:
    name: str = "run"
    seed: int = 0
    sources: Sources = field(default_factory=Sources)
    sample_world: SampleWorld | None = None
    ingest: IngestConfig = field(default_factory=IngestConfig)
    models: Models = field(default_factory=Models)
    generate: Generate = field(default_factory=Generate)
    filter: Filter = field(default_factory=Filter)
    resources: Resources = field(default_factory=Resources)
    publish: Publish = field(default_factory=Publish)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)  # the bundled pretrainer (make pretrain)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------------- loading
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def resolve_manifest_path(name_or_path: str) -> Path:
    """A name under manifests/ (``sample``) or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ManifestError(f"manifest file not found: {p}")
        return p
    candidate = MANIFEST_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = sorted(q.stem for q in MANIFEST_DIR.glob("*.yaml"))
        raise ManifestError(f"unknown manifest {name_or_path!r}: not a file and not one of {known}")
    return candidate


def load_raw(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ManifestError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: a manifest is a mapping at the top level")
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``--set a.b.c=VALUE``: VALUE is parsed as YAML (numbers, booleans, lists); dotted path created as needed."""
    for item in overrides:
        if "=" not in item:
            raise ManifestError(f"--set {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = yaml.safe_load(value)
    return raw


def expand_vars(obj: Any, env: dict[str, str], at: str = "") -> Any:
    """Replace ${VAR} in every string; an unset variable is an error naming it and the key."""
    if isinstance(obj, dict):
        return {k: expand_vars(v, env, f"{at}.{k}" if at else str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [expand_vars(v, env, f"{at}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, str):

        def sub(m: re.Match) -> str:
            if m.group(1) not in env:
                raise ManifestError(f"{at}: environment variable ${{{m.group(1)}}} is not set")
            return env[m.group(1)]

        return _VAR.sub(sub, obj)
    return obj


_choice = validate_choice


def load_manifest(
    name_or_path: str, overrides: list[str] | None = None, env: dict[str, str] | None = None
) -> Manifest:
    """Load, override, expand and validate a manifest (paths are checked separately: `check_paths`).
    ${JADE_BASES} is the bases shipped with the package unless the environment sets it (made absolute)."""
    path = resolve_manifest_path(name_or_path)
    raw = apply_overrides(load_raw(path), overrides or [])
    env = dict(os.environ if env is None else env)
    # an absolute folder: the workers that load a base may run in another directory
    env["JADE_BASES"] = str(Path(env.get("JADE_BASES") or BASES_DIR).resolve())
    raw = expand_vars(raw, env)
    return build(Manifest, raw, "")
