"""Ingest: the original datasets -> training examples; the image-text shards -> checked sample lists.

Training examples (one Parquet per model role, under _work/ingest/):
  caption  (VG regions)         prefix "dense caption"          suffix "<loc y0><loc x0><loc y1><loc x1> phrase"
  question (VG / GQA QAs)       prefix "question {type}"        suffix the question
  answer   (VG / GQA / VQA QAs) prefix "answer en {question}"   suffix the normalized answer
Annotation files are read in parallel, one job per file (`AnnotationJob`), streamed and written in batches,
so memory stays bounded at any file size; a record whose image file is missing goes to failures/training/.
A malformed annotation file stops the run here, before any image shard is read, naming the file and byte.
Image shards are decoded and checked in parallel (`ShardChecker`); every unusable sample goes to
failures/<shard>.parquet with its reason, and a key already used by an earlier shard is a "duplicate key".
Images are only checked here (convertible modes counted as converted): the model converts and resizes.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections import Counter
from dataclasses import asdict
from types import SimpleNamespace

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jade.formats import gqa, shards, vg, vqa
from jade.formats.errors import FormatError, ImageError
from jade.models import tasks
from jade.models.vqa_normalize import answer_type, normalize_answer
from jade.pipeline.config import Manifest
from jade.pipeline.executor import WorkerFactory
from jade.pipeline.rundir import RunDir, atomic_parquet_writer, atomic_write_json, atomic_write_parquet
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
QA_TASKS = {"question", "answer"}
FLUSH_ROWS = 20_000  # examples buffered before a write: bounded memory at any annotation-file size
PROGRESS_EVERY_S = 30.0  # a progress line per running shard at most this often (and one when it ends)
MISSING = "missing image file"


def reason_category(reason: str) -> str:
    """The leading words of a failure reason ("corrupt image: OSError: ..." -> "corrupt image")."""
    found = re.match(r"[a-z][a-z ]*[a-z]", reason)
    return found.group(0) if found else reason[:40]


def failures_table(rows: list[tuple]) -> pa.Table:
    cols = list(zip(*rows, strict=True)) if rows else [[] for _ in FAILURE_SCHEMA]
    return pa.table(
        {f.name: list(c) for f, c in zip(FAILURE_SCHEMA, cols, strict=True)}, schema=FAILURE_SCHEMA
    )


def _log_to_stderr() -> None:
    """Executor workers (Ray actors) start without logging set up: there, send the jade logger's INFO lines
    to stderr, which Ray forwards to the driver. Where logging is set up (CLI, tests) this does nothing."""
    jade = logging.getLogger("jade")
    if not logging.getLogger().handlers and not jade.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        jade.addHandler(handler)
        jade.setLevel(logging.INFO)


# ------------------------------------------------------------------------------------- annotation files
class Examples:
    """Training examples for the tasks a role trains on, written in batches; counts per task and skips."""

    def __init__(self, tasks_wanted: list[str], writer: pq.ParquetWriter):
        self.tasks, self.writer, self.rows = set(tasks_wanted), writer, []
        self.counts: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()

    def add(self, task: str, source: str, image_path: str, prefix: str, suffix: str, qtype: str = "") -> None:
        if task in self.tasks:
            self.rows.append((task, source, image_path, prefix, suffix, qtype))
            self.counts[task] += 1
            if len(self.rows) >= FLUSH_ROWS:
                self.flush()

    def add_qa(self, source: str, image_path: str, question: str, answer: str) -> None:
        question, norm = tasks.clean_text(question), normalize_answer(answer)
        if not question or not norm:
            self.skipped[f"{source}: empty question or answer"] += 1
            return
        qtype = answer_type(norm)
        self.add("question", source, image_path, tasks.question_prompt(qtype), question, qtype)
        self.add("answer", source, image_path, tasks.answer_prompt(question), norm, qtype)

    def flush(self) -> None:
        if self.rows:
            cols = list(zip(*self.rows, strict=True))
            data = {f.name: list(c) for f, c in zip(EXAMPLE_SCHEMA, cols, strict=True)}
            self.writer.write_table(pa.table(data, schema=EXAMPLE_SCHEMA))
            self.rows = []


class _Files:
    """Whether image files exist: each folder is listed once (not one request per image, which on a
    bucket would be one HTTP request per image)."""

    def __init__(self) -> None:
        self._names: dict[str, set[str]] = {}

    def exists(self, path: str) -> bool:
        folder, _, name = path.rpartition("/")
        if folder not in self._names:
            fs, root = fsspec.core.url_to_fs(folder)
            try:
                listing = fs.ls(root, detail=False)
            except (FileNotFoundError, NotADirectoryError):
                listing = []
            self._names[folder] = {str(e).rstrip("/").rsplit("/", 1)[-1] for e in listing}
        return name in self._names[folder]


class _VGImages:
    """VG image files by id across VG_100K / VG_100K_2 (each listed once); a missing one is recorded once."""

    def __init__(self, src, failures: list):
        # (width, height, url) per image: 108k small tuples, not the records
        self.info = {
            int(r["image_id"]): (r["width"], r["height"], r["url"])
            for r in vg.iter_image_data(src.image_data)
        }
        self.index, self.failures, self.missing = vg.ImageIndex(src.images), failures, set()

    def path(self, image_id: int) -> str | None:
        p = self.index.get(image_id)
        if p is None and image_id not in self.missing:
            self.missing.add(image_id)
            url = (self.info.get(image_id) or (0, 0, None))[2] or f"{image_id}.jpg"
            self.failures.append(("vg", "", str(image_id), url, "ingest", MISSING))
        return p


def _vg_regions(src, path: str, ex: Examples, failures: list) -> None:
    images = _VGImages(src, failures)
    for image_id, regions in vg.iter_regions(path):
        p, (w, h, _) = images.path(image_id), images.info.get(image_id, (0, 0, None))
        if p is None:
            continue
        if not w or not h:
            ex.skipped["vg: image not in image_data.json"] += len(regions)
            continue
        for r in regions:
            x0, y0 = r["x"] / w, r["y"] / h
            box = (x0, y0, x0 + r["width"] / w, y0 + r["height"] / h)
            phrase = tasks.clean_text(r.get("phrase") or "")
            if phrase and r["width"] > 0 and r["height"] > 0:
                ex.add("caption", "vg", p, tasks.CAPTION_PROMPT, tasks.caption_target(box, phrase))
            else:
                ex.skipped["vg: empty phrase or box"] += 1


def _vg_qas(src, path: str, ex: Examples, failures: list) -> None:
    images = _VGImages(src, failures)
    for image_id, qas in vg.iter_qas(path):
        if (p := images.path(image_id)) is not None:
            for qa in qas:
                ex.add_qa("vg", p, qa["question"], qa["answer"])


def _gqa(src, path: str, ex: Examples, failures: list) -> None:
    reader, files, seen = gqa.GQAQuestionReader(path), _Files(), {}
    for q in reader:
        p = gqa.image_path(src.images, q["image_id"])
        if q["image_id"] not in seen:
            seen[q["image_id"]] = files.exists(p)
            if not seen[q["image_id"]]:
                failures.append(("gqa", "", q["image_id"], p, "ingest", MISSING))
        if seen[q["image_id"]]:
            ex.add_qa("gqa", p, q["question"], q["answer"])
    for reason, n in reader.stats.as_dict().items():
        ex.skipped[f"gqa: {reason}"] += n


def _vqa(src, path: str, ex: Examples, failures: list) -> None:
    reader, files, seen = vqa.VQAReader(path, src.annotations), _Files(), {}
    for q in reader:
        p = vqa.coco_image_path(src.images, q["image_id"], q.get("split"))
        if q["image_id"] not in seen:
            seen[q["image_id"]] = files.exists(p)
            if not seen[q["image_id"]]:
                failures.append(("vqa", "", str(q["image_id"]), p, "ingest", MISSING))
        if seen[q["image_id"]]:
            ex.add_qa("vqa", p, q["question"], q["multiple_choice_answer"])
    for reason, n in reader.stats.as_dict().items():
        ex.skipped[f"vqa: {reason}"] += n


READERS = {"vg_regions": _vg_regions, "vg_qas": _vg_qas, "gqa": _gqa, "vqa": _vqa}


def annotation_jobs(m: Manifest) -> list[dict]:
    """One job per (role, annotation file): VG regions, VG QAs, each GQA question file, the VQA pair."""
    jobs = []
    for role in ("generator", "filter"):
        spec = getattr(m.models, role)
        wanted = set(spec.tasks)
        for source in spec.data:
            src = getattr(m.sources, source)
            if src is None:
                raise ValueError(f"models.{role}.data names {source!r} but sources.{source} is not set")
            if source == "vg":
                files = [("vg_regions", src.regions)] if "caption" in wanted else []
                files += [("vg_qas", src.qas)] if src.qas and wanted & QA_TASKS else []
            elif source == "gqa":
                qa_files = gqa.GQAQuestionReader(src.questions).files() if wanted & QA_TASKS else []
                files = [("gqa", f) for f in qa_files]
            else:
                files = [("vqa", src.questions)] if wanted & QA_TASKS else []
            for kind, path in files:
                name = str(path).rstrip("/").rsplit("/", 1)[-1].split(".")[0]
                jobs.append({"shard_id": f"{role}-{len(jobs):03d}-{name}", "role": role, "kind": kind,
                             "file": str(path), "src": asdict(src), "tasks": spec.tasks})  # fmt: skip
    return jobs


class AnnotationJob:
    """One annotation file -> a part of a role's examples and of failures/training/. Plain Python, no Ray."""

    def __init__(self, run_root: str):
        self.parts = RunDir(run_root).work("ingest") / "parts"
        _log_to_stderr()

    def __call__(self, job: dict) -> dict:
        t0, failures = time.time(), []
        try:
            with atomic_parquet_writer(self.parts / f"{job['shard_id']}.parquet", EXAMPLE_SCHEMA) as writer:
                ex = Examples(job["tasks"], writer)
                READERS[job["kind"]](SimpleNamespace(**job["src"]), job["file"], ex, failures)
                ex.flush()
        except FormatError as e:  # the driver re-raises it: the run stops, naming the file and byte
            return {"shard": job["shard_id"], "format_error": [e.path, e.position, e.message]}
        atomic_write_parquet(self.parts / f"{job['shard_id']}.failures.parquet", failures_table(failures))
        seconds = time.time() - t0
        log.info("ingest %s: %s examples, %d missing images, %s skipped in %.1fs", job["shard_id"],
                 dict(ex.counts), len(failures), sum(ex.skipped.values()), seconds)  # fmt: skip
        return {"shard": job["shard_id"], "examples": dict(ex.counts), "skipped": dict(ex.skipped),
                "training_failed": len(failures), "seconds": round(seconds, 2)}  # fmt: skip


def _merge_parts(parts: list, out) -> None:
    """Concatenate Parquet parts into one file, a row group at a time."""
    with atomic_parquet_writer(out, EXAMPLE_SCHEMA) as writer:
        for part in parts:
            f = pq.ParquetFile(part)
            for i in range(f.num_row_groups):
                writer.write_table(f.read_row_group(i))


# ---------------------------------------------------------------------------------------- image shards
class ShardChecker:
    """Per image shard: decode and check every sample; usable ones -> _work/ingest/samples/<shard>.parquet,
    the rest -> failures/<shard>.parquet. Runs on executor workers (plain Python, no Ray)."""

    def __init__(self, run_root: str, fp: str):
        self.run, self.fp = RunDir(run_root), fp
        _log_to_stderr()

    def __call__(self, item: dict) -> dict:
        shard = shards.ShardRef(**item["shard"])
        if rec := self.run.done("ingest", self.fp, shard.shard_id):
            return rec
        t0 = time.time()
        reader = shards.ShardReader(shard)
        ok, failed, converted = self.check(shard.shard_id, reader, t0)
        atomic_write_parquet(self.run.work("ingest") / "samples" / f"{shard.shard_id}.parquet",
                             pa.Table.from_pylist(ok, schema=SAMPLE_SCHEMA))  # fmt: skip
        atomic_write_parquet(self.run.failures / f"{shard.shard_id}.parquet", failures_table(failed))
        seconds, n = max(time.time() - t0, 1e-6), len(ok) + len(failed)
        fs, path = fsspec.core.url_to_fs(shard.url)
        kept = ("skipped", "sidecar", "damaged", "stats_json")  # members that are not samples, shard damage
        rec = {"shard": shard.shard_id, "checksum": f"{fs.checksum(path):x}", "images_in": n, "images_ok": len(ok),
               "images_failed": len(failed), "images_converted": sum(converted.values()),
               "converted_from": dict(converted), "failure_reasons": _categories(f[5] for f in failed),
               "reader": {k: v for k, v in reader.stats.as_dict().items() if k.startswith(kept)},
               "seconds": round(seconds, 2), "images_per_s": round(n / seconds, 1)}  # fmt: skip
        if reader.stats.stats_json_mismatch:
            log.warning("ingest %s: _stats.json counts other successes than the shard holds", shard.shard_id)
        log.info("ingest %s: %d in, %d ok (%d converted to RGB), %d failed %s in %.1fs, %.0f images/s",
                 shard.shard_id, n, len(ok), rec["images_converted"], len(failed), rec["failure_reasons"],
                 seconds, rec["images_per_s"])  # fmt: skip
        self.run.mark_done("ingest", self.fp, rec, shard.shard_id)
        return rec

    def check(self, shard_id: str, reader: shards.ShardReader, t0: float) -> tuple[list, list, Counter]:
        """(usable rows, failure rows, modes converted to RGB), with a progress line every PROGRESS_EVERY_S."""
        ok, failed, seen, converted, last = [], [], set(), Counter(), t0
        for s in reader:
            reason = s.error
            if reason is None and s.key in seen:
                reason = "duplicate key"
            if reason is None:
                try:
                    img = shards.decode_image(s.image_bytes)
                except ImageError as e:
                    reason = e.reason
            if reason is None and not (s.caption or "").strip():
                reason = "missing caption"
            if reason is None:
                seen.add(s.key)
                ok.append({"key": s.key, "url": s.url, "caption": s.caption, "width": img.width,
                           "height": img.height})  # fmt: skip
                if img.info.get("source_mode", "RGB") != "RGB":
                    converted[img.info["source_mode"]] += 1
            else:
                failed.append(("images", shard_id, s.key, s.url, "ingest", reason))
            if time.time() - last > PROGRESS_EVERY_S:
                last, n = time.time(), len(ok) + len(failed)
                rate = n / (last - t0)
                log.info("ingest %s: %d samples so far (%d ok), %.0f images/s", shard_id, n, len(ok), rate)
        return ok, failed, converted


def _categories(reasons) -> dict[str, int]:
    return dict(Counter(reason_category(r) for r in reasons))


def cross_shard_duplicates(run: RunDir, fp: str, shard_ids: list[str], records: dict[str, dict]) -> int:
    """Move each usable key that an earlier shard (in shard order) already holds to the later shard's
    failures ("duplicate key: also in shard X"); readers catch duplicates within a shard, only here across.

    Idempotent: failures are written first (a row already there is not added again), then the samples, then
    the shard's record, recounted from the files. Returns the number of samples moved.
    """
    samples = run.work("ingest") / "samples"
    keys = [pq.read_table(samples / f"{s}.parquet", columns=["key"]).column("key") for s in shard_ids]
    chunks = [c for col in keys for c in col.chunks]
    if not chunks:
        return 0
    counts = pc.value_counts(pa.chunked_array(chunks, type=pa.string()))
    dup = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
    if len(dup) == 0:
        return 0
    dup_set, first, moved = set(dup.to_pylist()), {}, 0
    for shard_id, col in zip(shard_ids, keys, strict=True):
        hit = col.to_pylist() if pc.any(pc.is_in(col, value_set=dup)).as_py() else []
        later = [i for i, k in enumerate(hit) if k in dup_set and first.setdefault(k, shard_id) != shard_id]
        if not later:
            continue
        table = pq.read_table(samples / f"{shard_id}.parquet")
        rows = table.take(later).to_pylist()
        old = pq.read_table(run.failures / f"{shard_id}.parquet")
        have = set(zip(old.column("key").to_pylist(), old.column("reason").to_pylist(), strict=True))
        reason = "duplicate key: also in shard {}".format
        new = [("images", shard_id, r["key"], r["url"], "ingest", reason(first[r["key"]])) for r in rows]
        new = [f for f in new if (f[2], f[5]) not in have]  # already there: a re-run after a crash
        failures = pa.concat_tables([old, failures_table(new)])
        atomic_write_parquet(run.failures / f"{shard_id}.parquet", failures)
        keep = pc.invert(pc.is_in(table.column("key"), value_set=pa.array([r["key"] for r in rows])))
        table = table.filter(keep)
        atomic_write_parquet(samples / f"{shard_id}.parquet", table)
        rec = records[shard_id]
        rec.update(images_ok=table.num_rows, images_failed=failures.num_rows,
                   failure_reasons=_categories(failures.column("reason").to_pylist()))  # fmt: skip
        run.mark_done("ingest", fp, {k: v for k, v in rec.items() if k != "fingerprint"}, shard_id)
        moved += len(rows)
    return moved


class Ingest:
    name = "ingest"
    after: tuple[str, ...] = ()

    def settings(self, m: Manifest) -> dict:
        # The sample world's settings too: a regenerated world keeps its paths but not its contents.
        world = asdict(m.sample_world) if m.sample_world else None
        return {"sources": asdict(m.sources), "generator": _role_data(m, "generator"),
                "filter": _role_data(m, "filter"), "sample_world": world, "world_seed": m.seed if world else None}  # fmt: skip

    def run(self, ctx: Context) -> dict:
        summary = self.annotations(ctx)  # first: a malformed file stops the run before any shard is read
        return {**summary, **self.images(ctx)}

    def annotations(self, ctx: Context) -> dict:
        m, run = ctx.manifest, ctx.run
        work = run.work("ingest")
        shutil.rmtree(work / "parts", ignore_errors=True)
        jobs = annotation_jobs(m)
        results = _by_shard(ctx.executor.map_shards(WorkerFactory(AnnotationJob, str(run.root)), jobs,
                                                    m.resources.ingest))  # fmt: skip
        for job in jobs:
            res = results.get(job["shard_id"], {"error": "no result"})
            if res.get("format_error"):
                raise FormatError(*res["format_error"])
            if res.get("error"):
                raise RuntimeError(f"ingest failed on {job['file']}: {res['error']}")
        summary: dict = {"examples": {}, "examples_skipped": {}}
        for role in ("generator", "filter"):
            mine = [j["shard_id"] for j in jobs if j["role"] == role]
            counts, skipped = Counter(), Counter()
            for job_id in mine:
                counts.update(results[job_id]["examples"])
                skipped.update(results[job_id]["skipped"])
            spec = getattr(m.models, role)
            if not counts:
                raise ValueError(f"no {role} training examples (tasks {spec.tasks}, data {spec.data})")
            _merge_parts([work / "parts" / f"{j}.parquet" for j in mine], work / f"{role}.parquet")
            summary["examples"][role], summary["examples_skipped"][role] = dict(counts), dict(skipped)
            log.info("ingest: %s examples %s", role, dict(counts))
        rows = set()
        for job in jobs:
            part = pq.read_table(work / "parts" / f"{job['shard_id']}.failures.parquet")
            rows.update(tuple(r.values()) for r in part.to_pylist())
        rows = sorted({(r[0], r[2]): r for r in sorted(rows)}.values())  # one row per (source, image)
        atomic_write_parquet(run.failures / "training" / "annotations.parquet", failures_table(rows))
        shutil.rmtree(work / "parts", ignore_errors=True)
        summary["training_failed"] = len(rows)
        return summary

    def images(self, ctx: Context) -> dict:
        m, run = ctx.manifest, ctx.run
        t0 = time.time()
        refs = shards.list_shards(m.sources.images.format, m.sources.images.urls)
        items = [{"shard_id": r.shard_id, "shard": asdict(r)} for r in refs]
        fp = ctx.fp(self.name)
        done_before = sum(1 for r in refs if run.done("ingest", fp, r.shard_id))
        log.info("ingest: %d image shards (%d already done)", len(refs), done_before)
        results = _by_shard(ctx.executor.map_shards(WorkerFactory(ShardChecker, str(run.root), fp), items,
                                                    m.resources.ingest))  # fmt: skip
        errors = [f"{r.shard_id}: {results.get(r.shard_id, {}).get('error', 'no result')}" for r in refs
                  if "images_in" not in results.get(r.shard_id, {})]  # fmt: skip
        if errors:
            raise RuntimeError(f"ingest failed on {len(errors)} shard(s): " + "; ".join(errors))
        moved = cross_shard_duplicates(run, fp, [r.shard_id for r in refs], results)
        recs = [results[r.shard_id] for r in refs]
        listing = [{**asdict(r), **res} for r, res in zip(refs, recs, strict=True)]
        atomic_write_json(run.work("ingest") / "shards.json", listing)
        out = {"shards": len(refs), "cross_shard_duplicates": moved}
        for k in ("images_in", "images_ok", "images_failed", "images_converted"):
            out[k] = sum(r.get(k, 0) for r in recs)
        reasons, modes = Counter(), Counter()
        for r in recs:
            reasons.update(r.get("failure_reasons", {}))
            modes.update(r.get("converted_from", {}))
        out["failure_reasons"], out["converted_from"] = dict(reasons), dict(modes)
        seconds = max(time.time() - t0, 1e-6)
        log.info("ingest: %d shards, %d images in, %d ok (%d converted to RGB), %d failed %s; %.1fs, %.0f "
                 "images/s", len(refs), out["images_in"], out["images_ok"], out["images_converted"],
                 out["images_failed"], out["failure_reasons"], seconds, out["images_in"] / seconds)  # fmt: skip
        return out


def _by_shard(results: list[dict]) -> dict[str, dict]:
    """Executor results keyed by shard (Ray may return them in any order)."""
    return {r.get("shard"): r for r in results}


def _role_data(m: Manifest, role: str) -> dict:
    spec = getattr(m.models, role)
    return {"tasks": spec.tasks, "data": spec.data}
