"""Training examples: the original annotation files (VG 1.2, GQA 1.2, VQA v2) -> one Parquet per model role
(`Examples.output(role)`).

  caption  (VG regions)         prefix "dense caption"          suffix "<loc y0><loc x0><loc y1><loc x1> phrase"
  question (VG / GQA QAs)       prefix "question {type}"        suffix the question
  answer   (VG / GQA / VQA QAs) prefix "answer en {question}"   suffix the normalized answer
  region_question (VG QAs mapped to a region by qa_to_region_mapping.json; GQA questions whose annotations
           name an object of the scene graphs)
                                prefix "question {jade type} <loc y0><loc x0><loc y1><loc x1> region caption"
                                suffix the question

Annotation files are read in parallel, one job per file (`AnnotationJob`), streamed and written in batches,
so memory stays bounded at any file size; a record whose image file is missing goes to failures/training/.
A malformed annotation file stops the run here, before any image shard is read, naming the file and byte.
The image shards are not read here (that is `ingest`): fine-tuning depends only on what it trains on.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from jade.formats import gqa, vg, vqa
from jade.formats.errors import FormatError
from jade.formats.run_tables import EXAMPLE, Failure, failures_table
from jade.models import tasks
from jade.models.vqa_normalize import answer_type, normalize_answer
from jade.pipeline.executor import WorkerFactory
from jade.pipeline.logs import worker_logging
from jade.pipeline.resources import StageResources
from jade.pipeline.rundir import RunDir
from jade.pipeline.stage import Context, StageFiles, WholeStage
from jade.typed import build, since

__all__ = [
    "AnnotationJob",
    "ExampleWriter",
    "Examples",
    "ExamplesSettings",
    "FLUSH_ROWS",
    "GQASource",
    "MISSING",
    "NAME",
    "QA_TASKS",
    "READERS",
    "SOURCES",
    "VGSource",
    "VQASource",
    "annotation_jobs",
    "job_source",
]

log = logging.getLogger("jade")
QA_TASKS = {"question", "answer"}
REGION_TASK = "region_question"  # questions asked about one region (`generate.condition: region`)
REGION_KINDS = ("vg_region_qas", "gqa_region")  # the annotation jobs that write REGION_TASK examples
NAME = "examples"  # the stage's name, also the `stage` of the failures it records
FLUSH_ROWS = 20_000  # examples buffered before a write: bounded memory at any annotation-file size
MISSING = "missing image file"
PARTS = f"_work/{NAME}/parts"  # one part per annotation job, merged per role (relative to the run directory)


@dataclass
class VGSource:
    """Visual Genome 1.2 (the manifest's ``sources.vg``)."""

    image_data: str = ""
    regions: str = ""
    images: list[str] = field(default_factory=list)  # VG_100K, VG_100K_2
    qas: str | None = None  # optional
    # qa_to_region_mapping.json: read only when the generator learns region-conditioned questions
    qa_regions: str | None = since("issue-28", None)


@dataclass
class GQASource:
    """GQA 1.2 (``sources.gqa``)."""

    questions: list[str] = field(default_factory=list)  # files, dirs or globs (train_all_questions/)
    images: str = ""
    # {train,val}_sceneGraphs.json: the boxes of the objects a question's annotations name; read only when the
    # generator learns region-conditioned questions
    scene_graphs: list[str] = since("issue-28", default_factory=list)


@dataclass
class VQASource:
    """VQA v2 (``sources.vqa``)."""

    questions: str = ""
    annotations: str = ""
    images: str = ""  # COCO folder: COCO_train2014_{image_id:012d}.jpg


class ExampleWriter:
    """Training examples for the tasks a role trains on, written in batches; counts per task and skips."""

    def __init__(self, tasks_wanted: list[str], writer: pq.ParquetWriter):
        self.tasks, self.writer = set(tasks_wanted), writer
        self.rows: list[tuple] = []
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

    def add_region_qa(
        self, source: str, image_path: str, question: str, answer: str, box: tuple, caption: str
    ) -> None:
        """A question asked about one region (box as fractions, its caption), typed in JADE's taxonomy."""
        question, caption = tasks.clean_text(question), tasks.clean_text(caption)
        norm = normalize_answer(answer)
        if not question or not norm or not caption:
            self.skipped[f"{source}: empty region question, answer or caption"] += 1
            return
        jtype = tasks.jade_type(question, answer_type(norm))
        prefix = tasks.region_question_prompt(jtype, box, caption)
        self.add(REGION_TASK, source, image_path, prefix, question, jtype)

    def flush(self) -> None:
        if self.rows:
            cols = list(zip(*self.rows, strict=True))
            data = {f.name: list(c) for f, c in zip(EXAMPLE, cols, strict=True)}
            self.writer.write_table(pa.table(data, schema=EXAMPLE))
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
        self.index, self.failures = vg.ImageIndex(src.images), failures
        self.missing: set[int] = set()

    def path(self, image_id: int) -> str | None:
        p = self.index.get(image_id)
        if p is None and image_id not in self.missing:
            self.missing.add(image_id)
            url = (self.info.get(image_id) or (0, 0, None))[2] or f"{image_id}.jpg"
            self.failures.append(Failure("vg", "", str(image_id), url, NAME, MISSING))
        return p


def _vg_regions(src, path: str, ex: ExampleWriter, failures: list) -> None:
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


def _vg_qas(src, path: str, ex: ExampleWriter, failures: list) -> None:
    images = _VGImages(src, failures)
    for image_id, qas in vg.iter_qas(path):
        if (p := images.path(image_id)) is not None:
            for qa in qas:
                ex.add_qa("vg", p, qa["question"], qa["answer"])


def _vg_region_qas(src, path: str, ex: ExampleWriter, failures: list) -> None:
    """VG QAs that qa_to_region_mapping.json ties to a region: the region's box and phrase condition the question.
    Holds the mapping and the mapped regions (ids, box, phrase) in memory: about 100 bytes a mapped QA."""
    mapping = dict(vg.iter_qa_regions(src.qa_regions))
    wanted = set(mapping.values())
    images = _VGImages(src, failures)
    regions: dict[int, tuple] = {}
    for image_id, regs in vg.iter_regions(src.regions):
        w, h, _ = images.info.get(image_id, (0, 0, None))
        for r in regs:
            if r["region_id"] in wanted and w and h and r["width"] > 0 and r["height"] > 0:
                x0, y0 = r["x"] / w, r["y"] / h
                box = (x0, y0, x0 + r["width"] / w, y0 + r["height"] / h)
                regions[r["region_id"]] = (image_id, box, r["phrase"] or "")
    for image_id, qas in vg.iter_qas(path):
        if (p := images.path(image_id)) is None:
            continue
        for qa in qas:
            region = regions.get(mapping.get(int(qa["qa_id"]), -1))
            if region is None or region[0] != image_id:
                ex.skipped["vg: qa without a region (qa_to_region_mapping.json)"] += 1
                continue
            ex.add_region_qa("vg", p, qa["question"], qa["answer"], region[1], region[2])


def _scene_objects(paths: list[str]) -> dict[str, dict[str, tuple]]:
    """GQA scene graphs -> {image_id: {object_id: (box as fractions, caption)}}; the caption is the object's
    one-word attributes and its name ("white large car")."""
    out: dict[str, dict[str, tuple]] = {}
    for path in paths:
        for image_id, graph in gqa.iter_scene_graphs(path):
            w, h = graph.get("width") or 0, graph.get("height") or 0
            objs = {}
            for oid, o in graph["objects"].items():
                if not w or not h or not isinstance(o, dict) or not o.get("w") or not o.get("h"):
                    continue
                box = (o["x"] / w, o["y"] / h, (o["x"] + o["w"]) / w, (o["y"] + o["h"]) / h)
                words = [a for a in o.get("attributes", []) if isinstance(a, str) and " " not in a]
                objs[str(oid)] = (box, " ".join([*words, str(o.get("name", ""))]))
            out[str(image_id)] = objs
    return out


def _first_object(annotations: dict) -> str | None:
    """The object the question names first: its ``annotations.question`` entry with the lowest token index
    (keys are a token index, ``"3"``, or a span, ``"6:8"``)."""
    refs = annotations.get("question") if isinstance(annotations, dict) else None
    if not isinstance(refs, dict) or not refs:
        return None
    try:
        first = min(refs, key=lambda k: int(str(k).split(":")[0]))
    except ValueError:
        return None
    return str(refs[first])


def _gqa_with_images(src, reader: gqa.GQAQuestionReader, failures: list):
    """(question, image path) of the questions whose image file exists; a missing image is recorded once."""
    files, seen = _Files(), {}
    for q in reader:
        p = gqa.image_path(src.images, q["image_id"])
        if q["image_id"] not in seen:
            seen[q["image_id"]] = files.exists(p)
            if not seen[q["image_id"]]:
                failures.append(Failure("gqa", "", q["image_id"], p, NAME, MISSING))
        if seen[q["image_id"]]:
            yield q, p


def _gqa_region(src, path: str, ex: ExampleWriter, failures: list) -> None:
    """GQA questions whose annotations name an object: that object's box and attributes condition the question."""
    objects = _scene_objects(src.scene_graphs)
    for q, p in _gqa_with_images(src, gqa.GQAQuestionReader(path), failures):
        oid = _first_object(q["annotations"])
        obj = objects.get(q["image_id"], {}).get(oid) if oid else None
        if obj is None:
            ex.skipped["gqa: question names no object of the scene graphs"] += 1
            continue
        ex.add_region_qa("gqa", p, q["question"], q["answer"], obj[0], obj[1])


def _gqa(src, path: str, ex: ExampleWriter, failures: list) -> None:
    reader = gqa.GQAQuestionReader(path)
    for q, p in _gqa_with_images(src, reader, failures):
        ex.add_qa("gqa", p, q["question"], q["answer"])
    for reason, n in reader.stats.as_dict().items():
        ex.skipped[f"gqa: {reason}"] += n


def _vqa(src, path: str, ex: ExampleWriter, failures: list) -> None:
    reader, files, seen = vqa.VQAReader(path, src.annotations), _Files(), {}
    for q in reader:
        p = vqa.coco_image_path(src.images, q["image_id"], q.get("split"))
        if q["image_id"] not in seen:
            seen[q["image_id"]] = files.exists(p)
            if not seen[q["image_id"]]:
                failures.append(Failure("vqa", "", str(q["image_id"]), p, NAME, MISSING))
        if seen[q["image_id"]]:
            ex.add_qa("vqa", p, q["question"], q["multiple_choice_answer"])
    for reason, n in reader.stats.as_dict().items():
        ex.skipped[f"vqa: {reason}"] += n


READERS = {
    "vg_regions": _vg_regions,
    "vg_qas": _vg_qas,
    "vg_region_qas": _vg_region_qas,
    "gqa": _gqa,
    "gqa_region": _gqa_region,
    "vqa": _vqa,
}
SOURCES = {"vg": VGSource, "gqa": GQASource, "vqa": VQASource}


def job_source(job: dict) -> VGSource | GQASource | VQASource:
    """A job's source settings, typed again on the worker (jobs travel to the workers as JSON)."""
    name = job["kind"].split("_")[0]
    return build(SOURCES[name], job["src"], f"sources.{name}")


def annotation_jobs(settings: ExamplesSettings) -> list[dict]:
    """One job per (role, annotation file): VG regions, VG QAs, each GQA question file, the VQA pair."""
    jobs: list[dict] = []
    for role, spec in settings.roles.items():
        wanted = set(spec["tasks"])
        regional = REGION_TASK in wanted
        for source in spec["data"]:
            if source not in settings.sources:
                raise ValueError(f"models.{role}.data names {source!r} but sources.{source} is not set")
            src = build(SOURCES[source], settings.sources[source], f"sources.{source}")
            if source == "vg":
                files = [("vg_regions", src.regions)] if "caption" in wanted else []
                files += [("vg_qas", src.qas)] if src.qas and wanted & QA_TASKS else []
                files += [("vg_region_qas", src.qas)] if src.qas and src.qa_regions and regional else []
            elif source == "gqa":
                qa_files = gqa.GQAQuestionReader(src.questions).files() if wanted & (QA_TASKS | {REGION_TASK}) else []
                files = [("gqa", f) for f in qa_files] if wanted & QA_TASKS else []
                files += [("gqa_region", f) for f in qa_files] if regional and src.scene_graphs else []
            else:
                files = [("vqa", src.questions)] if wanted & QA_TASKS else []
            for kind, path in files:
                name = str(path).rstrip("/").rsplit("/", 1)[-1].split(".")[0]
                jobs.append(
                    {
                        "shard_id": f"{role}-{len(jobs):03d}-{name}",
                        "role": role,
                        "kind": kind,
                        "file": str(path),
                        "src": asdict(src),
                        "tasks": spec["tasks"],
                    }
                )
        if regional and not any(j["kind"] in REGION_KINDS for j in jobs if j["role"] == role):
            raise ValueError(
                f"models.{role}.tasks asks for {REGION_TASK}, but no source gives region-grounded questions: "
                "set sources.vg.qas and sources.vg.qa_regions (qa_to_region_mapping.json), or "
                "sources.gqa.scene_graphs"
            )
    return jobs


class AnnotationJob:
    """One annotation file -> a part of a role's examples and of failures/training/. Plain Python, no Ray."""

    def __init__(self, run_root: str):
        self.run = RunDir(run_root)
        worker_logging()

    def __call__(self, job: dict) -> dict:
        t0, failures = time.time(), list[Failure]()
        try:
            with self.run.parquet_writer(f"{PARTS}/{job['shard_id']}.parquet", EXAMPLE) as writer:
                ex = ExampleWriter(job["tasks"], writer)
                READERS[job["kind"]](job_source(job), job["file"], ex, failures)
                ex.flush()
        except FormatError as e:  # the driver re-raises it: the run stops, naming the file and byte
            return {"shard": job["shard_id"], "format_error": [e.path, e.position, e.message]}
        self.run.write_parquet(f"{PARTS}/{job['shard_id']}.failures.parquet", failures_table(failures))
        seconds = time.time() - t0
        log.info(
            "ingest %s: %s examples, %d missing images, %s skipped in %.1fs",
            job["shard_id"],
            dict(ex.counts),
            len(failures),
            sum(ex.skipped.values()),
            seconds,
        )
        return {
            "shard": job["shard_id"],
            "examples": dict(ex.counts),
            "skipped": dict(ex.skipped),
            "training_failed": len(failures),
            "seconds": round(seconds, 2),
        }


def _merge_parts(run: RunDir, parts: list[str], out: str) -> None:
    """Concatenate Parquet parts into one file, a row group at a time (paths relative to the run directory)."""
    with run.parquet_writer(out, EXAMPLE) as writer:
        for part in parts:
            with run.open(part) as fh:
                f = pq.ParquetFile(fh)
                for i in range(f.num_row_groups):
                    writer.write_table(f.read_row_group(i))


@dataclass(frozen=True)
class ExamplesSettings:
    """What the training examples depend on: the annotation sources (``{"vg": {...}, ...}``) and what each role
    trains on (``{role: {"tasks": [...], "data": [...]}}``). The sample world's settings too: a regenerated
    world keeps its paths but not its contents."""

    sources: dict
    roles: dict
    sample_world: dict | None


class Examples(WholeStage):
    name = NAME
    FAILURES = StageFiles("failures/training/annotations.parquet")  # one row per unusable (source, image)

    @staticmethod
    def output(role: str) -> StageFiles:
        """A role's training examples (`EXAMPLE`)."""
        return StageFiles(f"_work/examples/{role}.parquet")

    def __init__(self, settings: ExamplesSettings, resources: StageResources):
        self.settings, self.resources = settings, resources
        self.outputs = (*(self.output(r) for r in settings.roles), self.FAILURES)

    def run(self, ctx: Context) -> dict:
        run = ctx.run
        run.remove_tree(PARTS)
        jobs = annotation_jobs(self.settings)
        results = _by_shard(
            ctx.executor.map_shards(
                WorkerFactory(AnnotationJob, run.url), jobs, self.resources, name=self.name
            )
        )
        for job in jobs:
            res = results.get(job["shard_id"], {"error": "no result"})
            if res.get("format_error"):
                raise FormatError(*res["format_error"])
            if res.get("error"):
                raise RuntimeError(f"examples: failed on {job['file']}: {res['error']}")
        summary: dict = {"examples": {}, "examples_skipped": {}}
        for role, spec in self.settings.roles.items():
            mine = [j["shard_id"] for j in jobs if j["role"] == role]
            counts: Counter[str] = Counter()
            skipped: Counter[str] = Counter()
            for job_id in mine:
                counts.update(results[job_id]["examples"])
                skipped.update(results[job_id]["skipped"])
            if not counts:
                raise ValueError(f"no {role} training examples (tasks {spec['tasks']}, data {spec['data']})")
            _merge_parts(run, [f"{PARTS}/{j}.parquet" for j in mine], run.rel(self.output(role)))
            summary["examples"][role], summary["examples_skipped"][role] = dict(counts), dict(skipped)
            log.info("examples: %s %s", role, dict(counts))
        found: set[Failure] = set()
        for job in jobs:
            part = run.read_table(f"{PARTS}/{job['shard_id']}.failures.parquet")
            found.update(Failure(**r) for r in part.to_pylist())

        def order(f: Failure) -> tuple:
            return tuple("" if v is None else v for v in asdict(f).values())

        # one row per (source, image)
        rows = sorted({(f.source, f.key): f for f in sorted(found, key=order)}.values(), key=order)
        run.write_parquet(run.rel(self.FAILURES), failures_table(rows))
        run.remove_tree(PARTS)
        summary["training_failed"] = len(rows)
        return summary


def _by_shard(results: list[dict]) -> dict[str, dict]:
    """Executor results keyed by shard (Ray may return them in any order)."""
    return {str(r.get("shard")): r for r in results}
