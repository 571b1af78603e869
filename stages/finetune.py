"""Fine-tune the generator (VG/GQA: dense captions, questions, answers) and the filter (VQA: answers).

From scratch on the sample world (tokenizer trained offline on the role's own texts, tiny PaliGemma from a
config) or from a pretrained checkpoint (`models.<role>.base`). Training runs through the executor (Ray
Train's TorchTrainer); the checkpoint lands in checkpoints/<role>/ as a save_pretrained directory, moved into
place only when complete. It is skipped when a checkpoint made with the same settings already exists.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow.parquet as pq

from jade.models import factory
from jade.models.tasks import strip_locs
from jade.models.train import ResumeState, TrainJob, train_loop
from jade.pipeline.config import Manifest, ModelSpec
from jade.pipeline.progress import TrainWatch
from jade.pipeline.rundir import replace_dir
from jade.pipeline.stage import Context

log = logging.getLogger("jade")


@dataclass(frozen=True)
class FinetuneSettings:
    spec: ModelSpec
    family: str
    seed: int


class Finetune:
    after = ("examples",)

    def __init__(self, role: str):
        self.role = role
        self.name = f"finetune_{role}"

    def settings(self, m: Manifest) -> FinetuneSettings:
        return FinetuneSettings(getattr(m.models, self.role), m.models.family, m.seed)

    def run(self, ctx: Context) -> dict:
        m, run = ctx.manifest, ctx.run
        spec = getattr(m.models, self.role)
        final = run.checkpoint(self.role)
        fp = ctx.fp(self.name)
        if factory.read_meta(final).get("fingerprint") == fp:
            log.info("%s: checkpoint with the same settings exists, reused", self.name)
            return {"reused": True, **factory.read_meta(final).get("train_metrics", {})}
        examples = run.work("examples") / f"{self.role}.parquet"
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
            seed=m.seed,
            attention=spec.attention,
            base=spec.base,
            processor_dir=str(processor_dir) if processor_dir else None,
            resume_dir=str(run.work(self.name) / "resume"),  # mid-training checkpoints: a re-run resumes
            threads=m.resources.threads,
            trust_remote_code=m.models.trust_remote_code,
            meta={
                "role": self.role,
                "fingerprint": fp,
                "settings": asdict(self.settings(m)),
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
            ctx.executor.train(train_loop, job, m.resources.train, run.work(self.name))
        if not (tmp / "config.json").exists():
            raise RuntimeError(f"{self.name}: training finished without writing a checkpoint to {tmp}")
        replace_dir(tmp, final)
        ResumeState(job, 0, 1).clear()  # finished: the resume state is spent
        if processor_dir:
            shutil.rmtree(processor_dir, ignore_errors=True)
        return {"reused": False, **factory.read_meta(final).get("train_metrics", {})}
