"""Ingest: the original datasets -> training examples; the image-text shards -> checked sample lists.

Training examples (one Parquet per model role, under _work/ingest/):
  caption  (VG regions)         prefix "dense caption"          suffix "<loc y0><loc x0><loc y1><loc x1> phrase"
  question (VG / GQA QAs)       prefix "question {type}"        suffix the question
  answer   (VG / GQA / VQA QAs) prefix "answer en {question}"   suffix the normalized answer
Image shards are decoded and checked in parallel; every unusable sample goes to failures/ with its reason.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict

import fsspec
import pyarrow as pa

from jade.formats import gqa, shards, vg, vqa
from jade.formats.errors import ImageError
from jade.models import tasks
from jade.models.vqa_normalize import answer_type, normalize_answer
from jade.pipeline.config import Manifest
from jade.pipeline.executor import WorkerFactory
from jade.pipeline.rundir import atomic_write_json, atomic_write_parquet
from jade.pipeline.stage import Context

log = logging.getLogger("jade")

EXAMPLE_SCHEMA = pa.schema(
    [("task", pa.string()), ("source", pa.string()), ("image_path", pa.string()), ("prefix", pa.string()),
     ("suffix", pa.string()), ("qtype", pa.string())]
)  # fmt: skip
SAMPLE_SCHEMA = pa.schema(
    [("key", pa.string()), ("url", pa.string()), ("caption", pa.string()), ("width", pa.int32()),
     ("height", pa.int32())]
)  # fmt: skip
FAILURE_SCHEMA = pa.schema(
    [("source", pa.string()), ("shard", pa.string()), ("key", pa.string()), ("url", pa.string()),
     ("stage", pa.string()), ("reason", pa.string())]
)  # fmt: skip


class Examples:
    """Collects training examples for the tasks a role trains on; counts what was skipped and why."""

    def __init__(self, tasks_wanted: list[str]):
        self.tasks, self.rows, self.skipped = set(tasks_wanted), [], Counter()

    def add(self, task: str, source: str, image_path: str, prefix: str, suffix: str, qtype: str = "") -> None:
        if task in self.tasks:
            self.rows.append((task, source, image_path, prefix, suffix, qtype))

    def add_qa(self, source: str, image_path: str, question: str, answer: str) -> None:
        question, norm = tasks.clean_text(question), normalize_answer(answer)
        if not question or not norm:
            self.skipped[f"{source}: empty question or answer"] += 1
            return
        qtype = answer_type(norm)
        self.add("question", source, image_path, tasks.question_prompt(qtype), question, qtype)
        self.add("answer", source, image_path, tasks.answer_prompt(question), norm, qtype)

    def table(self) -> pa.Table:
        cols = list(zip(*self.rows, strict=True)) if self.rows else [[] for _ in EXAMPLE_SCHEMA]
        return pa.table(
            {f.name: list(c) for f, c in zip(EXAMPLE_SCHEMA, cols, strict=True)}, schema=EXAMPLE_SCHEMA
        )


def _vg_examples(src, ex: Examples, failures: list) -> None:
    sizes = {int(r["image_id"]): (r["width"], r["height"]) for r in vg.iter_image_data(src.image_data)}
    index = vg.ImageIndex(src.images)
    missing: set[int] = set()

    def path_of(image_id: int) -> str | None:
        p = index.get(image_id)
        if p is None and image_id not in missing:
            missing.add(image_id)
            failures.append(("vg", "", str(image_id), "", "ingest", "missing image file"))
        return p

    if "caption" in ex.tasks:
        for image_id, regions in vg.iter_regions(src.regions):
            path, size = path_of(image_id), sizes.get(image_id)
            if path is None or size is None:
                continue
            w, h = size
            for r in regions:
                x0, y0 = r["x"] / w, r["y"] / h
                box = (x0, y0, x0 + r["width"] / w, y0 + r["height"] / h)
                phrase = tasks.clean_text(r.get("phrase") or "")
                if phrase and r["width"] > 0 and r["height"] > 0:
                    ex.add("caption", "vg", path, tasks.CAPTION_PROMPT, tasks.caption_target(box, phrase))
                else:
                    ex.skipped["vg: empty phrase or box"] += 1
    if src.qas and ex.tasks & {"question", "answer"}:
        for image_id, qas in vg.iter_qas(src.qas):
            path = path_of(image_id)
            if path is not None:
                for qa in qas:
                    ex.add_qa("vg", path, qa["question"], qa["answer"])


def _gqa_examples(src, ex: Examples, failures: list) -> None:
    reader = gqa.GQAQuestionReader(src.questions)
    exists: dict[str, bool] = {}
    for q in reader:
        path = gqa.image_path(src.images, q["image_id"])
        if q["image_id"] not in exists:
            exists[q["image_id"]] = _exists(path)
            if not exists[q["image_id"]]:
                failures.append(("gqa", "", q["image_id"], "", "ingest", "missing image file"))
        if exists[q["image_id"]]:
            ex.add_qa("gqa", path, q["question"], q["answer"])
    for reason, n in reader.stats.as_dict().items():
        ex.skipped[f"gqa: {reason}"] += n


def _vqa_examples(src, ex: Examples, failures: list) -> None:
    reader = vqa.VQAReader(src.questions, src.annotations)
    exists: dict[int, bool] = {}
    for q in reader:
        path = vqa.coco_image_path(src.images, q["image_id"], q.get("split"))
        if q["image_id"] not in exists:
            exists[q["image_id"]] = _exists(path)
            if not exists[q["image_id"]]:
                failures.append(("vqa", "", str(q["image_id"]), "", "ingest", "missing image file"))
        if exists[q["image_id"]]:
            ex.add_qa("vqa", path, q["question"], q["multiple_choice_answer"])
    for reason, n in reader.stats.as_dict().items():
        ex.skipped[f"vqa: {reason}"] += n


def _exists(path: str) -> bool:
    fs, p = fsspec.core.url_to_fs(path)
    return fs.exists(p)


def failures_table(rows: list[tuple]) -> pa.Table:
    cols = list(zip(*rows, strict=True)) if rows else [[] for _ in FAILURE_SCHEMA]
    return pa.table(
        {f.name: list(c) for f, c in zip(FAILURE_SCHEMA, cols, strict=True)}, schema=FAILURE_SCHEMA
    )


class ShardChecker:
    """Per image shard: decode and check every sample; usable ones -> _work/ingest/samples/<shard>.parquet,
    the rest -> failures/<shard>.parquet. Runs on executor workers (plain Python, no Ray)."""

    def __init__(self, run_root: str, fp: str):
        from jade.pipeline.rundir import RunDir

        self.run, self.fp = RunDir(run_root), fp

    def __call__(self, item: dict) -> dict:
        shard = shards.ShardRef(**item["shard"])
        if rec := self.run.done("ingest", self.fp, shard.shard_id):
            return rec
        ok, failed, seen = [], [], set()
        for s in shards.iter_shard(shard):
            reason = s.error
            if reason is None and s.key in seen:
                reason = "duplicate key"
            if reason is None:
                try:
                    img = shards.decode_image(s.image_bytes)
                    w, h = img.size
                except ImageError as e:
                    reason = str(e)
            if reason is None and not (s.caption or "").strip():
                reason = "missing caption"
            if reason is None:
                seen.add(s.key)
                ok.append({"key": s.key, "url": s.url, "caption": s.caption, "width": w, "height": h})
            else:
                failed.append(("images", shard.shard_id, s.key, s.url, "ingest", reason))
        atomic_write_parquet(self.run.work("ingest") / "samples" / f"{shard.shard_id}.parquet",
                             pa.Table.from_pylist(ok, schema=SAMPLE_SCHEMA))  # fmt: skip
        atomic_write_parquet(self.run.failures / f"{shard.shard_id}.parquet", failures_table(failed))
        rec = {"shard": shard.shard_id, "images_in": len(ok) + len(failed), "images_ok": len(ok),
               "images_failed": len(failed), "failure_reasons": dict(Counter(f[5] for f in failed))}  # fmt: skip
        self.run.mark_done("ingest", self.fp, rec, shard.shard_id)
        return rec


class Ingest:
    name = "ingest"
    after: tuple[str, ...] = ()

    def settings(self, m: Manifest) -> dict:
        # The sample world's settings too: a regenerated world keeps its paths but not its contents.
        world = asdict(m.sample_world) if m.sample_world else None
        return {"sources": asdict(m.sources), "generator": _role_data(m, "generator"),
                "filter": _role_data(m, "filter"), "sample_world": world, "world_seed": m.seed if world else None}  # fmt: skip

    def run(self, ctx: Context) -> dict:
        m, run = ctx.manifest, ctx.run
        work = run.work("ingest")
        summary: dict = {"examples": {}, "examples_skipped": {}}
        training_failures: list[tuple] = []
        for role in ("generator", "filter"):
            spec = getattr(m.models, role)
            ex = Examples(spec.tasks)
            for source in spec.data:
                src = getattr(m.sources, source)
                if src is None:
                    raise ValueError(f"models.{role}.data names {source!r} but sources.{source} is not set")
                {"vg": _vg_examples, "gqa": _gqa_examples, "vqa": _vqa_examples}[source](
                    src, ex, training_failures
                )
            table = ex.table()
            if table.num_rows == 0:
                raise ValueError(
                    f"no training examples for the {role} (tasks {spec.tasks}, data {spec.data})"
                )
            atomic_write_parquet(work / f"{role}.parquet", table)
            summary["examples"][role] = dict(Counter(table.column("task").to_pylist()))
            summary["examples_skipped"][role] = dict(ex.skipped)
            log.info("ingest: %s examples %s", role, summary["examples"][role])
        training_failures = sorted(set(training_failures))
        atomic_write_parquet(
            run.failures / "training" / "annotations.parquet", failures_table(training_failures)
        )
        summary["training_failed"] = len(training_failures)

        refs = shards.list_shards(m.sources.images.format, m.sources.images.urls)
        items = [{"shard_id": r.shard_id, "shard": asdict(r)} for r in refs]
        fp = ctx.fp(self.name)
        results = ctx.executor.map_shards(
            WorkerFactory(ShardChecker, str(run.root), fp), items, m.resources.ingest
        )
        errors = [r for r in results if r.get("error")]
        if errors:
            raise RuntimeError(
                f"ingest failed on {len(errors)} shard(s): " + "; ".join(e["error"] for e in errors)
            )
        atomic_write_json(
            work / "shards.json", [{**asdict(r), **res} for r, res in zip(refs, results, strict=True)]
        )
        summary["shards"] = len(refs)
        summary["images_ok"] = sum(r["images_ok"] for r in results)
        summary["images_failed"] = sum(r["images_failed"] for r in results)
        return summary


def _role_data(m: Manifest, role: str) -> dict:
    spec = getattr(m.models, role)
    return {"tasks": spec.tasks, "data": spec.data}
