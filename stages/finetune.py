"""Fine-tune the generator (VG/GQA: dense captions, questions, answers) and the filter (VQA: answers).

From scratch on the sample world (tokenizer trained offline on the role's own texts, tiny PaliGemma from a
config) or from a pretrained checkpoint (`models.<role>.base`). Training runs through the executor (Ray
Train's TorchTrainer); the checkpoint lands in checkpoints/<role>/ as a save_pretrained directory, moved into
place only when complete. It is skipped when a checkpoint made with the same settings already exists.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from jade.models import factory
from jade.models.attention import RULES
from jade.models.specs import Architecture, Training
from jade.models.tasks import strip_locs
from jade.models.train import ResumeState, TrainJob, train_loop
from jade.pipeline.progress import TrainWatch
from jade.pipeline.resources import TrainResources
from jade.pipeline.rundir import RunDir
from jade.pipeline.stage import Context, StageFiles, WholeStage
from jade.remote import is_url, localize
from jade.typed import ConfigError, since, validate_choice

__all__ = [
    "DATA",
    "Finetune",
    "FinetuneSettings",
    "ModelSpec",
    "TASKS",
    "TrainAndPut",
    "adopt",
]

log = logging.getLogger("jade")
TASKS = ("caption", "question", "answer", "region_question")
DATA = ("vg", "gqa", "vqa")


@dataclass
class ModelSpec:
    """A model role's settings (the manifest's ``models.<role>``)."""

    base: str | None = None  # hub id or local path of a pretrained checkpoint; None: train from scratch
    # the attention rule (models.attention) the model is fine-tuned and run under: prefix | image | causal
    attention: str = "prefix"
    architecture: Architecture = field(default_factory=Architecture)
    train: Training = field(default_factory=Training)
    tasks: list[str] = field(default_factory=list)  # caption, question, answer, region_question
    data: list[str] = field(default_factory=list)  # training sources: vg, gqa, vqa
    # false: `base` is already this role's fine-tuned model (a finished run's checkpoints/<role>), used as it
    # is, with no training (manifests/sample-paper.yaml reuses the default run's models this way). Added after
    # runs were made: left out of the fingerprint while true, so existing checkpoints stay valid.
    finetune: bool = since("issue-26", True)

    def validate(self, at: str) -> None:
        validate_choice(self.attention, RULES, f"{at}.attention")
        for task in self.tasks:
            validate_choice(task, TASKS, f"{at}.tasks")
        for src in self.data:
            validate_choice(src, DATA, f"{at}.data")
        if not self.data:
            raise ConfigError(f"{at}.data: name at least one training source ({', '.join(DATA)})")
        if not self.finetune and not self.base:
            raise ConfigError(f"{at}.finetune: false needs {at}.base (the model to use)")


@dataclass(frozen=True)
class FinetuneSettings:
    spec: ModelSpec
    family: str
    seed: int


def adopt(base: Path, tmp: Path, meta: dict, attention: str) -> dict:
    """``models.<role>.finetune: false``: a finished run's fine-tuned checkpoint becomes this role's model, copied
    unchanged into ``tmp`` (the caller puts it in the run directory); its record keeps what it was trained with
    and gains this run's fingerprint and its origin."""
    record = factory.read_meta(base)
    if not (base / "config.json").exists() or not record:
        raise FileNotFoundError(f"{base}: not a fine-tuned checkpoint (config.json and {factory.JADE_META})")
    if record.get("attention", attention) != attention:
        raise ValueError(
            f"{base}: trained under attention {record['attention']!r}, the manifest says {attention!r}"
        )
    shutil.copytree(base, tmp)
    (tmp / factory.JADE_META).write_text(
        json.dumps({**record, **meta, "adopted_from": str(base)}, indent=2, sort_keys=True)
    )
    log.info("%s: %s used as it is (finetune: false)", meta["role"], base)
    return {"reused": False, "adopted_from": str(base), **record.get("train_metrics", {})}


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
        final, fp = run.rel(self.checkpoint(self.role)), ctx.fp(self.name)
        meta = run.read_json(f"{final}/{factory.JADE_META}") or {}
        if meta.get("fingerprint") == fp:
            log.info("%s: checkpoint with the same settings exists, reused", self.name)
            return {"reused": True, **meta.get("train_metrics", {})}
        # local working folders: in the run directory, or (a run directory on a store) in the local cache
        tmp = (run.scratch / final).with_name(f".{self.role}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)  # a killed run's leftovers (the run directory is locked)
        if not spec.finetune:
            base = Path(localize(spec.base, "dir") if is_url(spec.base) else spec.base)
            summary = adopt(base, tmp, {"role": self.role, "fingerprint": fp}, spec.attention)
            run.put_dir(tmp, final, last=factory.JADE_META)
            return summary
        processor = f"_work/{self.name}/processor"
        if not spec.base:
            texts = run.read_table(run.rel(self.examples), columns=["prefix", "suffix"])
            corpus = texts.column("prefix").to_pylist() + texts.column("suffix").to_pylist()
            built = tmp.with_name(f".{self.role}.processor")
            shutil.rmtree(built, ignore_errors=True)
            factory.build_processor(strip_locs(corpus), spec.architecture).save_pretrained(built)
            run.put_dir(built, processor)  # where every training worker reads it
        job = TrainJob(
            examples=run.uri(run.rel(self.examples)),
            out_dir=str(tmp),
            arch=spec.architecture,
            train=spec.train,
            seed=seed,
            attention=spec.attention,
            base=spec.base,
            processor_dir=run.uri(processor) if not spec.base else None,
            # mid-training checkpoints: a re-run resumes
            resume_dir=run.uri(f"_work/{self.name}/resume"),
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
            ctx.executor.train(
                TrainAndPut(run.url, final), job, self.resources, run.scratch / "_work" / self.name
            )
        meta = run.read_json(f"{final}/{factory.JADE_META}") or {}
        if meta.get("fingerprint") != fp:
            raise RuntimeError(
                f"{self.name}: training finished without writing a checkpoint to {run.uri(final)}"
            )
        ResumeState(job, 0, 1).clear()  # finished: the resume state is spent
        run.remove_tree(processor)
        return {"reused": False, **meta.get("train_metrics", {})}


class TrainAndPut:
    """What each training worker runs (picklable: it travels to Ray Train's workers): `train_loop` on local
    copies of what it reads where those are URLs (examples, processor, base; `jade.remote.localize`), then, on
    rank 0, the checkpoint moved into the run directory (`RunDir.put_dir`: a rename, or on an object store an
    upload with jade_model.json last). The run directory's completion record comes after, on the driver."""

    def __init__(self, run_url: str, rel: str):
        self.run_url, self.rel = run_url, rel

    def __call__(self, job: TrainJob, rank: int = 0, world_size: int = 1, **hooks) -> dict:
        local = replace(
            job,
            examples=localize(job.examples, "file"),
            processor_dir=localize(job.processor_dir, "dir") if job.processor_dir else None,
            base=localize(job.base, "dir") if job.base and is_url(job.base) else job.base,
        )
        metrics = train_loop(local, rank=rank, world_size=world_size, **hooks)
        if rank == 0:
            if not (Path(job.out_dir) / "config.json").exists():
                raise RuntimeError(f"training finished without writing a checkpoint to {job.out_dir}")
            RunDir(self.run_url).put_dir(job.out_dir, self.rel, last=factory.JADE_META)
        return metrics
