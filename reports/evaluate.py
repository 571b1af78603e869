"""`jade eval DIR`: measure a sample-world run's data against the hidden truth (never read by the pipeline).

Every generated pair (kept ones from dataset/, rejected ones from rejected/) is checked by the sample
world's question parser: right when the generator's answer equals the true answer after VQA normalization,
wrong when not, unverifiable when the question cannot be parsed (unparseable) or names no object or several
where it means one (ill-posed); unverifiable pairs are counted, never dropped, and the strict kept precision
(`qa_precision_kept_strict`, right / all kept) counts the kept ones as wrong.
Pairs rejected as "duplicate question" were never answered: they count as generated questions (keep rate,
questions per image, distinct-question ratio) but not as checked pairs. A dense caption is right when its box
matches a true object at IoU >= 0.5 and its words name that object's true attributes. Every number is also
given per question type. Writes eval.json (DESIGN.md section 10) and eval.md.

A run made under `generate.condition: region` asks each question about one kept dense-caption region (the
pair's `region`, with JADE's question type `jade_type`). Such a pair is also checked against its region's true
object (the truth object whose box best overlaps the region's, at IoU >= 0.5): it is about its region when that
object is among those the question names (`region_verdict`). Those numbers, and every number per JADE type,
are added only when some pair carries a region: a type-conditioned run's report is what it always was.

It also separates the two causes of a wrong pair, question and answer: `model_accuracy` asks each trained
model (greedy, plain `generate`) true questions about the world's held-out VQA val images (`vqa_val`, never
trained on), drawn from the world's own question templates, and reports accuracy per template.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter, defaultdict
from pathlib import Path

from jade import remote
from jade.models import presupposition
from jade.models.attention import rule_of
from jade.models.tasks import JADE_TYPES, QUESTION_TYPES, iou
from jade.models.vqa_normalize import normalize_answer
from jade.pipeline.rundir import RunDir
from jade.sampleworld import WORLD_FOLDER
from jade.stages.filter import Filter
from jade.stages.finetune import Finetune
from jade.stages.publish import Publish

__all__ = [
    "NOT_ANSWERED",
    "PROBE_QUESTIONS",
    "UNVERIFIABLE",
    "accuracy_summary",
    "answer_verdicts",
    "check_pair",
    "check_region",
    "check_rejection",
    "evaluate_run",
    "found_objects",
    "markdown",
    "model_accuracy",
    "probe_items",
    "region_finds",
    "region_object",
    "region_verdict",
    "score",
    "truth_boxes",
]

log = logging.getLogger("jade")
NOT_ANSWERED = ("duplicate question",)  # rejections whose pair has no answer to check
# a region pair's verdicts: about its region's true object; about other objects or none; its region matches no
# true object; its question cannot be parsed
REGION_VERDICTS = ("about", "elsewhere", "unmatched", "unparseable")


def _truth_box(obj: dict, w: int, h: int) -> tuple[float, float, float, float]:
    return (obj["x"] / w, obj["y"] / h, (obj["x"] + obj["w"]) / w, (obj["y"] + obj["h"]) / h)


def truth_boxes(graph: dict) -> list[tuple[float, float, float, float]]:
    """The boxes of a scene graph's true objects, as regions' boxes are written (x0, y0, x1, y1 in 0-1)."""
    return [_truth_box(o, graph["width"], graph["height"]) for o in graph["objects"].values()]


UNVERIFIABLE = ("unparseable", "ill-posed")


def _precision(c: Counter) -> float | None:
    n = c["right"] + c["wrong"]
    return c["right"] / n if n else None


def _strict(c: Counter) -> float | None:
    """right / all: a pair that cannot be verified counts as wrong."""
    n = sum(c.values())
    return c["right"] / n if n else None


def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def check_pair(question: str, answer: str | None, graph: dict | None) -> str:
    """right | wrong | unparseable (not a question of the world's language) | ill-posed (it names no object or
    several where it means one), for one generated pair against one image's true scene graph."""
    from jade.sampleworld.language import answer_question, parse_question

    if parse_question(question or "") is None:
        return "unparseable"
    true = answer_question(question or "", graph)
    if true is None:
        return "ill-posed"
    return "right" if normalize_answer(answer or "") == normalize_answer(true) else "wrong"


def region_finds(region: dict, obj: dict, graph: dict) -> bool:
    """A dense caption is right about a true object when its box overlaps the object's at IoU >= 0.5 and its
    words name the object's colour and shape (and its size and place, where it names them)."""
    from jade.sampleworld.language import caption_matches

    box = _truth_box(obj, graph["width"], graph["height"])
    return iou(tuple(region["bbox"]), box) >= 0.5 and caption_matches(region["caption"], obj)


def check_region(region: dict, graph: dict | None) -> bool:
    """Precision's test: the region is right about some true object of the image."""
    return bool(graph) and any(region_finds(region, o, graph) for o in graph["objects"].values())


def found_objects(regions: list[dict], graph: dict | None) -> tuple[int, int]:
    """Recall's test, the same one seen from the truth: (true objects, those some kept region is right
    about)."""
    if not graph:
        return 0, 0
    objs = list(graph["objects"].values())
    return len(objs), sum(any(region_finds(r, o, graph) for r in regions) for o in objs)


def region_object(bbox: list[float], graph: dict | None) -> str | None:
    """The id of the region's true object: the truth object whose box overlaps ``bbox`` best, at IoU >= 0.5
    (the first in the graph's order on a tie); None when no object overlaps it that much."""
    if not graph:
        return None
    best, best_iou = None, 0.5
    for oid, obj in graph["objects"].items():
        v = iou(tuple(bbox), _truth_box(obj, graph["width"], graph["height"]))
        if v > best_iou or (best is None and v >= best_iou):
            best, best_iou = str(oid), v
    return best


def region_verdict(question: str, region: dict, graph: dict | None) -> str:
    """Is a region-conditioned pair about its region? ``unmatched`` when the region matches no true object
    (`region_object`), else ``unparseable`` when the parser cannot read the question, else ``about`` when the
    region's object is among the objects the question names (its first noun phrase; a relation question's
    subject: `language.question_referents`), else ``elsewhere``."""
    from jade.sampleworld.language import question_referents

    if (oid := region_object(region["bbox"], graph)) is None:
        return "unmatched"
    names = question_referents(question or "", graph)
    if names is None:
        return "unparseable"
    return "about" if oid in names else "elsewhere"


def check_rejection(check: str | None, graph: dict | None) -> str | None:
    """For a pair rejected by a presupposition check (`check`: `models.presupposition.record`): ``held`` when
    the presupposition is true in the image (the rejection was the filter's mistake: "Is there a red circle?"
    is yes, "How many red circles are there?" is 1), ``failed`` when it is not (a right rejection),
    ``unverifiable`` when the check question names nothing the world's language knows; None for a pair no
    check rejected."""
    from jade.sampleworld.language import answer_question

    if (parsed := presupposition.parse_record(check)) is None:
        return None
    question = parsed[0]
    true = answer_question(question, graph) if graph else None
    if true is None:
        return "unverifiable"
    return "held" if normalize_answer(true) == presupposition.need(question) else "failed"


def score(truth: dict, rows: list[dict], rejected: list[dict]) -> dict:
    """The report from the truth (key -> GQA scene graph), the published rows (key, qa, regions) and the
    rejected pairs (key, question, type, answer, reason). Pure: `evaluate_run` only reads the files."""
    checks: dict[str, Counter] = defaultdict(Counter)  # "kept" | "rejected" | "all" [+ ".type"] -> verdicts
    n: Counter = Counter()  # kept / generated / duplicates [+ ".type"]
    questions: dict[str, set] = defaultdict(
        set
    )  # "image" | "run" [+ ".type"] -> distinct normalized questions
    grounding: dict[str, Counter] = defaultdict(Counter)  # "kept" | "rejected" [+ "@jade type"] -> verdicts
    jade_types: set[str] = set()  # JADE question types the pairs carry
    regions: Counter = Counter()
    objects: Counter = Counter()  # true objects ("true") and those a kept region is right about ("found")
    by_size: dict[int, Counter] = defaultdict(Counter)  # the same by objects in the scene (+ "images")

    def add(key: str, qa: dict, kept: bool, answered: bool) -> None:
        t, norm = qa["type"], normalize_answer(qa["question"] or "")
        region, jt = qa.get("region"), qa.get("jade_type")
        n["region_pairs"] += region is not None
        if region is not None and answered:
            verdict = region_verdict(qa["question"], region, truth.get(key))
            for suffix in ("", *((f"@{jt}",) if jt else ())):
                grounding[("kept" if kept else "rejected") + suffix][verdict] += 1
        if jt:
            jade_types.add(jt)
        for suffix in ("", f".{t}", *((f"@{jt}",) if jt else ())):
            n[f"generated{suffix}"] += 1
            n[f"kept{suffix}"] += kept
            questions[f"image{suffix}"].add((key, norm))
            questions[f"run{suffix}"].add(norm)
            if not answered:
                n[f"duplicates{suffix}"] += 1
                continue
            verdict = check_pair(qa["question"], qa["answer"], truth.get(key))
            for group in ("all", "kept" if kept else "rejected"):
                checks[group + suffix][verdict] += 1

    for row in rows:
        for qa in row["qa"]:
            add(row["key"], qa, True, True)
        graph = truth.get(row["key"])
        for r in row["regions"]:
            regions["right" if check_region(r, graph) else "wrong"] += 1
        true, found = found_objects(row["regions"], graph)
        objects.update(true=true, found=found)
        if true:
            by_size[true].update(images=1, objects=true, found=found)
    presupposed: Counter = Counter()  # pairs rejected by a presupposition check, by what the truth says
    for r in rejected:
        add(r["key"], r, False, r["reason"] not in NOT_ANSWERED)
        if (held := check_rejection(r.get("check"), truth.get(r["key"]))) is not None:
            presupposed[held] += 1

    images = len(rows)

    def numbers(suffix: str) -> dict:
        c_all = checks["all" + suffix]
        all_checked = sum(c_all.values())
        return {
            "qa_precision_all": _precision(c_all),
            "qa_precision_kept": _precision(checks["kept" + suffix]),
            "qa_precision_kept_strict": _strict(checks["kept" + suffix]),
            "qa_precision_rejected": _precision(checks["rejected" + suffix]),
            "qa_unverifiable": _ratio(sum(c_all[v] for v in UNVERIFIABLE), all_checked),
            "qa_unparseable": _ratio(c_all["unparseable"], all_checked),
            "qa_ill_posed": _ratio(c_all["ill-posed"], all_checked),
            "qa_ill_posed_kept": _ratio(
                checks["kept" + suffix]["ill-posed"], sum(checks["kept" + suffix].values())
            ),
            "keep_rate": _ratio(n["kept" + suffix], n["generated" + suffix]),
            "kept_per_image": _ratio(n["kept" + suffix], images),
            "questions_per_image": _ratio(n["generated" + suffix], images),
            "distinct_question_ratio": _ratio(len(questions["image" + suffix]), n["generated" + suffix]),
            "distinct_question_ratio_run": _ratio(len(questions["run" + suffix]), n["generated" + suffix]),
            "questions_generated": n["generated" + suffix],
            "qa_kept": n["kept" + suffix],
            "duplicates_not_checked": n["duplicates" + suffix],
            "pairs_checked": {g: dict(checks[g + suffix]) for g in ("all", "kept", "rejected")},
        }

    def grounded(group: str) -> dict:
        c = grounding[group]
        return {
            f"region_pairs_{group.split('@')[0]}": sum(c.values()),
            f"region_grounded_{group.split('@')[0]}": _ratio(c["about"], sum(c.values())),
        }

    # only when some pair carries a region (condition: region): region_pairs_kept / _rejected (region pairs
    # checked; a duplicate question is not), region_grounded_kept / _rejected (the share of them about their
    # region, `region_verdict`), region_pairs_checked (their verdicts), and every number per JADE type
    by_region = {}
    if n["region_pairs"]:
        by_region = {
            **grounded("kept"),
            **grounded("rejected"),
            "region_pairs_checked": {
                g: {v: grounding[g][v] for v in REGION_VERDICTS} for g in ("kept", "rejected")
            },
            "by_jade_type": {
                t: {**numbers(f"@{t}"), **grounded(f"kept@{t}"), **grounded(f"rejected@{t}")}
                for t in (*JADE_TYPES, *sorted(jade_types - set(JADE_TYPES)))
            },
        }
    return {
        **numbers(""),
        **by_region,
        "images": images,
        "region_precision": _precision(regions),
        "regions_per_image": _ratio(sum(regions.values()), images),
        # true objects some kept region is right about (the test of region_precision), overall and by the
        # number of objects in the scene
        "region_recall": _ratio(objects["found"], objects["true"]),
        "objects_true": objects["true"],
        "objects_found": objects["found"],
        "region_recall_by_objects": {
            str(k): {**c, "recall": _ratio(c["found"], c["objects"])} for k, c in sorted(by_size.items())
        },
        "by_type": {t: numbers(f".{t}") for t in QUESTION_TYPES},
        # pairs rejected by a presupposition check: "held" ones were rejected by the filter's mistake
        "check_rejections": {k: presupposed[k] for k in ("held", "failed", "unverifiable")},
    }


PROBE_QUESTIONS = 12  # true questions per held-out image in model_accuracy


def probe_items(world: Path | str, max_images: int = 100) -> list[tuple[Path | str, object]]:
    """(image path, QA) pairs: ``PROBE_QUESTIONS`` true questions about each of the world's first
    ``max_images`` held-out VQA val images, drawn from the world's templates with a per-image seed. ``world``:
    a local folder, or an fsspec URL (then the image paths are URLs)."""
    import random

    from jade.sampleworld.language import sample_question_records

    try:
        truth = json.loads(remote.read_bytes(f"{world}/truth/vqa_val_scene_graphs.json"))
    except (FileNotFoundError, json.JSONDecodeError):
        truth = {}
    items = []
    for image_id, graph in list(truth.items())[:max_images]:
        name = f"coco/val2014/COCO_val2014_{int(image_id):012d}.jpg"
        path = f"{world}/{name}" if remote.is_url(world) else Path(world) / name
        if remote.exists(path):
            rng = random.Random(f"model_accuracy:{image_id}")
            items += [(path, qa) for qa in sample_question_records(graph, rng, PROBE_QUESTIONS)]
    return items


def _keys(qa) -> tuple[str, ...]:
    return ("all", f"type.{qa.qtype}", f"template.{qa.template}")


def answer_verdicts(
    model, processor, items: list, attention: str, batch: int = 64, device: str = "cpu"
) -> dict[str, list[bool]]:
    """Greedy answers of one model to the probe ``items``: right or wrong per question, under the keys
    ``all``, ``type.<qtype>`` and ``template.<template>``."""
    from PIL import Image

    from jade.models.greedy import greedy
    from jade.models.tasks import answer_prompt

    verdicts: dict[str, list[bool]] = defaultdict(list)
    images = []
    for path, _ in items:
        with Image.open(io.BytesIO(remote.read_bytes(path)) if remote.is_url(path) else path) as f:
            images.append(f.convert("RGB"))
    texts = greedy(
        model, processor, images, [answer_prompt(qa.question) for _, qa in items], attention, 8, batch, device
    )
    for (_, qa), text in zip(items, texts, strict=True):
        for k in _keys(qa):
            verdicts[k].append(normalize_answer(text) == normalize_answer(qa.answer))
    return verdicts


def model_accuracy(run: RunDir, max_images: int = 100, batch: int = 64) -> dict | None:
    """Greedy accuracy of each trained model on true questions about the world's held-out VQA val images:
    ``{role: {"all": acc, "by_type": {...}, "by_template": {...}, "questions": n}}`` for the generator, the
    filter and ``answer_prior`` (always the template's most frequent true answer); None without the images."""
    from jade.models import factory

    items = probe_items(run.uri(WORLD_FOLDER), max_images)
    if not items:
        return None
    # The answer prior: a model that always gives each template's most frequent true answer.
    by_template: dict[str, Counter] = defaultdict(Counter)
    for _, qa in items:
        by_template[qa.template][qa.answer] += 1
    mode = {t: c.most_common(1)[0][0] for t, c in by_template.items()}
    prior: dict[str, list[bool]] = defaultdict(list)
    for _, qa in items:
        for k in _keys(qa):
            prior[k].append(qa.answer == mode[qa.template])
    out = {"answer_prior": accuracy_summary(prior)}
    for role in ("generator", "filter"):
        rel = run.rel(Finetune.checkpoint(role))
        if not run.exists(f"{rel}/config.json"):
            continue
        ckpt = run.local_dir(rel, factory.JADE_META)  # a local copy when the run is on a store
        model, processor = factory.load(str(ckpt))
        out[role] = accuracy_summary(answer_verdicts(model, processor, items, rule_of(ckpt), batch))
    return out


def accuracy_summary(verdicts: dict[str, list[bool]]) -> dict:
    def acc(k: str) -> float:
        return sum(verdicts[k]) / len(verdicts[k])

    return {
        "all": acc("all"),
        "questions": len(verdicts["all"]),
        "by_type": {k.split(".", 1)[1]: acc(k) for k in sorted(verdicts) if k.startswith("type.")},
        "by_template": {k.split(".", 1)[1]: acc(k) for k in sorted(verdicts) if k.startswith("template.")},
    }


def _read_rejected(run: RunDir, rel: str) -> list[dict]:
    """A rejected/ file's pairs; ``jade_type`` and ``region`` where the file has them (a run made before
    they were recorded has not)."""
    columns = ["key", "question", "type", "answer", "reason", "check"]
    table = run.read_table(rel)
    return table.select([c for c in (*columns, "jade_type", "region") if c in table.column_names]).to_pylist()


def evaluate_run(run_dir: str | Path) -> dict:
    run = RunDir(run_dir)
    world = run.uri(WORLD_FOLDER)
    truth = run.read_json(f"{WORLD_FOLDER}/truth/cc3m_scene_graphs.json")
    if truth is None:
        raise SystemExit(
            f"jade eval: {world}/truth/cc3m_scene_graphs.json not found (sample-world runs only)"
        )
    rows = [
        r
        for f in run.glob(Publish.DATA.glob())
        for r in run.read_table(f, columns=["key", "qa", "regions", "provenance"]).to_pylist()
    ]
    rejected = [r for f in run.glob(Filter.REJECTED.glob()) for r in _read_rejected(run, f)]
    # the truth is keyed by the world's own (img2dataset) keys: the rows' source keys
    by_key = {
        r["key"]: truth[r["provenance"]["source_key"]] for r in rows if r["provenance"]["source_key"] in truth
    }
    missing = {r["key"] for r in rows} - set(by_key)
    if rows and not by_key:
        raise SystemExit(
            f"jade eval: none of the {len(rows)} published images has a truth in {world}/truth "
            "(jade eval checks sample-world runs only)"
        )
    if missing:
        log.warning(
            "jade eval: %d of %d published images have no truth and are not checked", len(missing), len(rows)
        )
    report = score(
        by_key, [r for r in rows if r["key"] in by_key], [r for r in rejected if r["key"] in by_key]
    )
    report["images_without_truth"] = len(missing)
    report["model_accuracy"] = model_accuracy(run)
    run.write_json("eval.json", report)
    run.write_bytes("eval.md", markdown(report).encode())
    return report


def markdown(r: dict) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.3f}"

    cols = [
        "qa_precision_all",
        "qa_precision_kept",
        "qa_precision_kept_strict",
        "qa_precision_rejected",
        "qa_unparseable",
        "qa_ill_posed",
        "keep_rate",
        "questions_per_image",
        "kept_per_image",
        "distinct_question_ratio",
    ]
    lines = [
        "# Data quality (sample world, checked against the hidden truth)",
        "",
        "| type | precision all | precision kept | kept, strict | precision rejected | unparseable | ill-posed "
        "| keep rate | questions / image "
        "| kept / image | distinct questions |",
        "|---" * (len(cols) + 1) + "|",
        "| all | " + " | ".join(f(r[c]) for c in cols) + " |",
    ]
    for t, b in r["by_type"].items():
        lines.append(f"| {t} | " + " | ".join(f(b[c]) for c in cols) + " |")
    checked = r["pairs_checked"]["all"]
    lines += [
        "",
        f"- checked pairs: {checked.get('right', 0)} right, {checked.get('wrong', 0)} wrong, "
        f"{checked.get('unparseable', 0)} unparseable, {checked.get('ill-posed', 0)} ill-posed; "
        f"{r['duplicates_not_checked']} duplicate questions "
        "(never answered) not checked",
        f"- images: {r['images']}; distinct questions over the whole run: {f(r['distinct_question_ratio_run'])}",
        "- rejected by a presupposition check: {held} whose presupposition holds (the filter's mistake), "
        "{failed} whose does not, {unverifiable} unverifiable".format(**r["check_rejections"]),
        f"- dense-caption precision (IoU >= 0.5 and true attributes): {f(r['region_precision'])}",
        f"- dense-caption recall (true objects some kept region is right about): {f(r['region_recall'])} "
        f"({r['objects_found']} of {r['objects_true']}); by objects in the scene: "
        + ", ".join(
            f"{k}: {f(v['recall'])} ({v['found']} of {v['objects']})"
            for k, v in r["region_recall_by_objects"].items()
        ),
        f"- regions per image: {f(r['regions_per_image'])}",
        "",
        "Precisions count verifiable pairs only (strict: right / all kept); unparseable and ill-posed are shares "
        "of the answered pairs. Distinct questions: distinct (after normalization) per image over all "
        "generated.",
        "",
    ]
    if "by_jade_type" in r:
        lines += _region_markdown(r, f)
    acc = r.get("model_accuracy")
    if acc:
        roles = list(acc)
        templates = sorted({t for a in acc.values() for t in a["by_template"]})
        lines += [
            "## Model accuracy on true questions (held-out VQA val images, greedy)",
            "",
            "| | " + " | ".join(roles) + " |",
            "|---" * (len(roles) + 1) + "|",
            "| all | " + " | ".join(f(acc[x]["all"]) for x in roles) + " |",
        ]
        lines += [
            f"| {t} | " + " | ".join(f(acc[x]["by_type"].get(t)) for x in roles) + " |"
            for t in QUESTION_TYPES
        ]
        lines += [
            f"| {t} | " + " | ".join(f(acc[x]["by_template"].get(t)) for x in roles) + " |" for t in templates
        ]
        lines += [
            "",
            "A kept pair is right when the generator is right; the filter keeps it when both agree. "
            "Accuracies near the answer prior mean the models do not yet read the image.",
            "",
        ]
    return "\n".join(lines)


def _region_markdown(r: dict, f) -> list[str]:
    """eval.md's section on region-conditioned pairs (only for a run that has them)."""

    def counts(group: str) -> str:
        c = r["region_pairs_checked"][group]
        return (
            f"{c['about']} about their region, {c['elsewhere']} about other objects (or none), {c['unmatched']} whose "
            f"region matches no true object, {c['unparseable']} unparseable"
        )

    cols = ["qa_kept", "qa_precision_kept", "qa_precision_kept_strict", "region_grounded_kept", "keep_rate"]
    lines = [
        "## Region-conditioned pairs (`generate.condition: region`)",
        "",
        f"- kept: {r['region_pairs_kept']} pairs with a region, {f(r['region_grounded_kept'])} about their "
        f"region ({counts('kept')})",
        f"- rejected (answered): {r['region_pairs_rejected']} pairs with a region, "
        f"{f(r['region_grounded_rejected'])} about their region ({counts('rejected')})",
        "",
        "A pair is about its region when the region's true object (best box overlap, IoU >= 0.5) is among the "
        "objects its question names (the first noun phrase; a relation question's subject).",
        "",
        "| JADE type | kept | precision kept | kept, strict | about its region (kept) | keep rate |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for t, b in r["by_jade_type"].items():
        lines.append(f"| {t} | {b['qa_kept']} | " + " | ".join(f(b[c]) for c in cols[1:]) + " |")
    return [*lines, ""]


if __name__ == "__main__":
    import sys

    print(json.dumps(evaluate_run(sys.argv[1]), indent=2))
