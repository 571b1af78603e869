"""The manifest (DESIGN.md section 4): one YAML recipe per dataset, loaded into the typed `Manifest`.

Each section is the settings dataclass of the stage module that uses it (`stages.ingest.ImagesSource`,
`stages.generate.GenerateConfig`, `stages.filter.FilterRule`, ...); this module assembles them, adds each role's
defaults, and keeps the checks that span sections in one place (`Manifest.validate`). Every error names the
key by its dotted path, before any work starts.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jade.models.pretrain.config import PretrainConfig
from jade.models.specs import Training
from jade.pipeline.config import load_config, resolve_path
from jade.pipeline.resources import StageResources, TrainResources
from jade.sampleworld import WorldConfig
from jade.stages.examples import GQASource, VGSource, VQASource
from jade.stages.filter import FilterRule
from jade.stages.finetune import ModelSpec
from jade.stages.generate import GenerateConfig
from jade.stages.ingest import ImagesSource
from jade.stages.publish import PublishConfig
from jade.typed import ConfigError, ranged, validate_choice

__all__ = [
    "BASES_DIR",
    "FilterSpec",
    "GeneratorSpec",
    "Ingest",
    "MANIFEST_DIR",
    "Manifest",
    "ManifestError",
    "ModelStageResources",
    "Models",
    "PACKAGE_DIR",
    "ROLES",
    "Resources",
    "Sources",
    "load_manifest",
    "resolve_manifest_path",
]

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the package root (the checkout, or site-packages/jade)
MANIFEST_DIR = PACKAGE_DIR / "manifests"
# ${JADE_BASES}: the pretrained bases shipped with the package (models/bases/<name>)
BASES_DIR = PACKAGE_DIR / "models" / "bases"
ROLES = ("generator", "filter")

ManifestError = ConfigError  # an invalid manifest; the message names the key or path


@dataclass
class Sources:
    images: ImagesSource = field(default_factory=ImagesSource)
    vg: VGSource | None = None
    gqa: GQASource | None = None
    vqa: VQASource | None = None


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
        validate_choice(self.family, ("paligemma",), f"{at}.family")


@dataclass
class Ingest:
    """How image shards are checked (the ingest and dedupe stages)."""

    min_image_size: int = ranged(32, ge=1)  # an image with a side shorter than this is unusable
    dedupe: bool = (
        True  # byte-identical images under different keys: later ones are "duplicate image: same as KEY"
    )


@dataclass
class ModelStageResources(StageResources):
    """generate and answer (`resources.generate`, `resources.filter`): their actors hold a model, so by default
    they take a GPU where there is one."""

    num_gpus: float | None = ranged(None, ge=0)  # type: ignore[assignment]  # None: 1 per actor with GPUs, else 0
    # The most sequences an actor's engine decodes together (hf: rows of a decode batch, of any prompt
    # lengths; vLLM: max_num_seqs). It sets speed and memory only, never the outputs.
    decode_rows: int = ranged(256, ge=1)


@dataclass
class Resources:
    ingest: StageResources = field(default_factory=StageResources)
    generate: ModelStageResources = field(default_factory=ModelStageResources)
    filter: ModelStageResources = field(default_factory=ModelStageResources)
    train: TrainResources = field(default_factory=TrainResources)
    threads: int | None = ranged(None, ge=1)  # torch threads per process (None: the machine's cores)


@dataclass
class Manifest:
    name: str = "run"
    seed: int = 0
    sources: Sources = field(default_factory=Sources)
    sample_world: WorldConfig | None = None  # the sample world's sizes; its seed defaults to the manifest's
    ingest: Ingest = field(default_factory=Ingest)
    models: Models = field(default_factory=Models)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    filter: FilterRule = field(default_factory=FilterRule)
    resources: Resources = field(default_factory=Resources)
    publish: PublishConfig = field(default_factory=PublishConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)  # the bundled pretrainer (make pretrain)

    def check_sources(self) -> None:
        """The checks that span sections, made before a run's work (a manifest without sources still loads:
        `jade plan`, `jade status`): every role's training data has its source."""
        for role in ROLES:
            for src in getattr(self.models, role).data:
                if getattr(self.sources, src) is None:
                    raise ConfigError(f"models.{role}.data names {src!r} but sources.{src} is missing")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def world(self) -> WorldConfig | None:
        """The sample world to write, its seed resolved (the manifest's unless it names one)."""
        if self.sample_world is None:
            return None
        seed = self.seed if self.sample_world.seed is None else self.sample_world.seed
        return dataclasses.replace(self.sample_world, seed=seed)


def resolve_manifest_path(name_or_path: str) -> Path:
    """A name under manifests/ (``sample``) or a path to a YAML file."""
    return resolve_path(name_or_path, MANIFEST_DIR)


def load_manifest(
    name_or_path: str, overrides: list[str] | None = None, env: dict[str, str] | None = None
) -> Manifest:
    """Load, override, expand and validate a manifest (paths are checked separately: `check_paths`).
    ${JADE_BASES} is the bases shipped with the package unless the environment sets it (made absolute)."""
    env = dict(os.environ if env is None else env)
    # an absolute folder: the workers that load a base may run in another directory
    env["JADE_BASES"] = str(Path(env.get("JADE_BASES") or BASES_DIR).resolve())
    return load_config(Manifest, resolve_manifest_path(name_or_path), overrides or [], env)
