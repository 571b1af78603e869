"""Fine-tune the generator (VG/GQA: dense captions, questions, answers) and the filter (VQA: answers).

From scratch on the sample world (tokenizer trained offline on the role's own texts, tiny PaliGemma from a
config) or from a pretrained checkpoint (`models.<role>.base`). Training runs through the executor (Ray
Train's TorchTrainer); the checkpoint lands in checkpoints/<role>/ as a save_pretrained directory, moved into
place only when complete. It is skipped when a checkpoint made with the same settings already exists.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from jade.models import factory
from jade.models.attention import RULES
from jade.models.specs import Architecture, Training
from jade.models.tasks import strip_locs
from jade.models.train import ResumeState, TrainJob, train_loop
from jade.pipeline.progress import TrainWatch
from jade.pipeline.resources import TrainResources
from jade.pipeline.rundir import replace_dir
from jade.pipeline.stage import Context, StageFiles, WholeStage
from jade.typed import ConfigError, validate_choice

__all__ = [
    "DATA",
    "Finetune",
    "FinetuneSettings",
    "ModelSpec",
    "TASKS",
]

log = logging.getLogger("jade")
TASKS = ("caption", "question", "answer")
DATA = ("vg", "gqa", "vqa")


@dataclass
class ModelSpec:
    """A model role's settings (the manifest's ``models.<role>``)."""

    base: str | None = None  # hub id or local path of a pretrained checkpoint; None: train from scratch
    # the attention rule (models.attention) the model is fine-tuned and run under: prefix | image | causal
    attention: str = "prefix"
    architecture: Architecture = field(default_factory=Architecture)
    train: Training = field(default_factory=Training)
    tasks: list[str] = field(default_factory=list)  # caption, question, answer
    data: list[str] = field(default_factory=list)  # training sources: vg, gqa, vqa

    def validate(self, at: str) -> None:
        validate_choice(self.attention, RULES, f"{at}.attention")
        for task in self.tasks:
            validate_choice(task, TASKS, f"{at}.tasks")
        for src in self.data:
            validate_choice(src, DATA, f"{at}.data")
        if not self.data:
            raise ConfigError(f"{at}.data: name at least one training source ({', '.join(DATA)})")


@dataclass(frozen=True)
class FinetuneSettings:
    spec: ModelSpec
    family: str
    seed: int


class Finetune(WholeStage):
    """Fine-tunes one role's model from its training examples (an input handed in: `examples`)."""

    @staticmethod
    def checkpoint(role: str) -> StageFiles:
        """A role's fine-tuned checkpoint: a save_pretrained folder with its jade_model.json."""
        return StageFiles(f"checkpoints/{role}")

    def __init__(
        self,
        role: str,
        settings: FinetuneSettings,
        examples: StageFiles,
        resources: TrainResources,
        threads: int | None = None,
        trust_remote_code: bool = False,
    ):
        self.role, self.name = role, f"finetune_{role}"
        self.settings, self.examples, self.resources = settings, examples, resources
        self.threads, self.trust_remote_code = threads, trust_remote_code
        self.inputs, self.outputs = (examples,), (self.checkpoint(role),)

    def run(self, ctx: Context) -> dict:
        run, spec, seed = ctx.run, self.settings.spec, self.settings.seed
        final = run.path(self.checkpoint(self.role))
        fp = ctx.fp(self.name)
        if factory.read_meta(final).get("fingerprint") == fp:
            log.info("%s: checkpoint with the same settings exists, reused", self.name)
            return {"reused": True, **factory.read_meta(final).get("train_metrics", {})}
        examples = run.path(self.examples)
        tmp = final.with_name(f".{self.role}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)  # a killed run's leftovers (the run directory is locked)
        processor_dir = None
        if not spec.base:
            texts = pq.read_table(examples, columns=["prefix", "suffix"])
            corpus = texts.column("prefix").to_pylist() + texts.column("suffix").to_pylist()
            processor = factory.build_processor(strip_locs(corpus), spec.architecture)
            processor_dir = tmp.with_name(f".{self.role}.processor")
            shutil.rmtree(processor_dir, ignore_errors=True)
            processor.save_pretrained(processor_dir)
        job = TrainJob(
            examples=str(examples),
            out_dir=str(tmp),
            arch=spec.architecture,
            train=spec.train,
            seed=seed,
            attention=spec.attention,
            base=spec.base,
            processor_dir=str(processor_dir) if processor_dir else None,
            resume_dir=str(run.work(self.name) / "resume"),  # mid-training checkpoints: a re-run resumes
            threads=self.threads,
            trust_remote_code=self.trust_remote_code,
            strategy=self.resources.strategy,  # ddp | fsdp: how the workers hold the model (models.tuning)
            meta={
                "role": self.role,
                "fingerprint": fp,
                "settings": asdict(self.settings),
                "base": spec.base,
            },
        )
        log.info(
            "%s: training %d steps (batch %d)%s",
            self.name,
            spec.train.steps,
            spec.train.batch_size,
            f" from {spec.base}" if spec.base else "",
        )
        with TrainWatch(Path(job.out_dir + ".progress.json"), self.name):
            ctx.executor.train(train_loop, job, self.resources, run.work(self.name))
        if not (tmp / "config.json").exists():
            raise RuntimeError(f"{self.name}: training finished without writing a checkpoint to {tmp}")
        replace_dir(tmp, final)
        ResumeState(job, 0, 1).clear()  # finished: the resume state is spent
        if processor_dir:
            shutil.rmtree(processor_dir, ignore_errors=True)
        return {"reused": False, **factory.read_meta(final).get("train_metrics", {})}
