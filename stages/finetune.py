"""Fine-tune the generator (VG/GQA: dense captions, questions, answers) and the filter (VQA: answers).

From scratch on the sample world (tokenizer trained offline on the role's own texts, tiny PaliGemma from a
config) or from a pretrained checkpoint (`models.<role>.base`). Training runs through the executor (Ray
Train's TorchTrainer); the checkpoint lands in checkpoints/<role>/ as a save_pretrained directory, moved into
place only when complete. It is skipped when a checkpoint made with the same settings already exists.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict

import pyarrow.parquet as pq

from jade.models import factory
from jade.models.train import ResumeState, train_loop
from jade.pipeline.config import Manifest
from jade.pipeline.rundir import atomic_replace_dir
from jade.pipeline.stage import Context

log = logging.getLogger("jade")


class Finetune:
    after = ("ingest",)

    def __init__(self, role: str):
        self.role = role
        self.name = f"finetune_{role}"

    def settings(self, m: Manifest) -> dict:
        spec = getattr(m.models, self.role)
        return {"spec": asdict(spec), "family": m.models.family, "seed": m.seed}

    def run(self, ctx: Context) -> dict:
        m, run = ctx.manifest, ctx.run
        spec = getattr(m.models, self.role)
        final = run.checkpoint(self.role)
        fp = ctx.fp(self.name)
        if factory.read_meta(final).get("fingerprint") == fp:
            log.info("%s: checkpoint with the same settings exists, reused", self.name)
            return {"reused": True, **factory.read_meta(final).get("train_metrics", {})}
        examples = run.work("ingest") / f"{self.role}.parquet"
        tmp = final.with_name(f".{self.role}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        processor_dir = None
        if not spec.base:
            texts = pq.read_table(examples, columns=["prefix", "suffix"])
            corpus = texts.column("prefix").to_pylist() + texts.column("suffix").to_pylist()
            processor = factory.build_processor(_strip_locs(corpus), spec.architecture)
            processor_dir = tmp.with_name(f".{self.role}.processor")
            shutil.rmtree(processor_dir, ignore_errors=True)
            processor.save_pretrained(processor_dir)
        config = {
            "examples": str(examples),
            "processor_dir": str(processor_dir) if processor_dir else None,
            "base": spec.base,
            "trust_remote_code": m.models.trust_remote_code,
            "arch": asdict(spec.architecture),
            "train": asdict(spec.train),
            "seed": m.seed,
            "out_dir": str(tmp),
            "resume_dir": str(run.work(self.name) / "resume"),  # mid-training checkpoints: a re-run resumes
            "threads": m.resources.threads,
            "meta": {
                "role": self.role,
                "fingerprint": fp,
                "settings": self.settings(m),
                "base": spec.base,
            },
        }
        log.info("%s: training %d steps (batch %d)", self.name, spec.train.steps, spec.train.batch_size)
        ctx.executor.train(train_loop, config, m.resources.train, run.work(self.name))
        if not (tmp / "config.json").exists():
            raise RuntimeError(f"{self.name}: training finished without writing a checkpoint to {tmp}")
        atomic_replace_dir(tmp, final)
        ResumeState({"resume_dir": config["resume_dir"]}, 0, 1).clear()  # finished: the resume state is spent
        if processor_dir:
            shutil.rmtree(processor_dir, ignore_errors=True)
        return {"reused": False, **factory.read_meta(final).get("train_metrics", {})}


def _strip_locs(texts: list[str]) -> list[str]:
    """Location tokens are added by the processor; keep them out of the BPE training corpus."""
    from jade.models.tasks import _LOC

    return [_LOC.sub(" ", t) for t in texts]
