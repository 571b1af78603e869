"""VQA v2 readers: questions, annotations, and their join by question_id with bounded memory.

The questions file is streamed once into a compact sorted table (question ids and image ids in typed
arrays, question strings in a list: ~40 MB for the 443k train questions); the annotations file is then
streamed record by record and joined by binary search. Questions without an annotation are counted
(`stats.skipped_no_annotation`), as are annotations without a question.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_left
from collections.abc import Iterator

from .common import CountingReader, ReadStats, iter_json_events, iter_json_items

_SPLIT = re.compile(r"(train|val|test)(?:-dev|-std|-challenge)?(\d{4})")
_SCALARS = ("number", "string", "null", "boolean")


def coco_image_path(images_dir: str, image_id: int, split: str | None = None) -> str:
    """`{images_dir}/COCO_{split}_{image_id:012d}.jpg`.

    The split comes from the folder name when it looks like `train2014`/`val2014`/`test2015`, else
    from `split` (a file's `data_subtype`; `test-dev2015` maps to the `test2015` images).
    """
    folder = str(images_dir).rstrip("/")
    match = _SPLIT.fullmatch(folder.rsplit("/", 1)[-1])
    if match is None and split:
        match = _SPLIT.search(split)
    if match is None:
        raise ValueError(f"cannot tell the COCO split of {images_dir!r}; pass split= (e.g. 'train2014')")
    return f"{folder}/COCO_{match.group(1)}{match.group(2)}_{int(image_id):012d}.jpg"


class VQAQuestionReader(CountingReader):
    """Streams a questions file: {question_id, image_id, question}; sets `data_subtype` (e.g. val2014)."""

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self.stats = ReadStats()
        self.data_subtype: str | None = None

    def _iter(self) -> Iterator[dict]:
        current: dict | None = None
        for prefix, event, value in iter_json_events(self.path, b"{"):
            if prefix == "questions.item":
                if event == "start_map":
                    current = {}
                elif event == "end_map" and current is not None:
                    record, current = self._check(current), None
                    if record is not None:
                        yield record
            elif current is not None and event in _SCALARS and prefix.startswith("questions.item."):
                current[prefix[len("questions.item.") :]] = value
            elif prefix == "data_subtype" and event == "string":
                self.data_subtype = value

    def _check(self, raw: dict) -> dict | None:
        qid, image_id, question = raw.get("question_id"), raw.get("image_id"), raw.get("question")
        if not isinstance(qid, int) or not isinstance(image_id, int) or not isinstance(question, str):
            self.stats.add("skipped_bad_record")
            return None
        self.stats.add("questions")
        return {"question_id": qid, "image_id": image_id, "question": question}


class _QuestionTable:
    """question_id → (image_id, question), sorted arrays searched by bisection."""

    def __init__(self, records: Iterator[dict], stats: ReadStats) -> None:
        qids, image_ids, questions = array("q"), array("q"), []
        for r in records:
            qids.append(r["question_id"])
            image_ids.append(r["image_id"])
            questions.append(r["question"])
        if any(qids[i] >= qids[i + 1] for i in range(len(qids) - 1)):
            order = sorted(range(len(qids)), key=qids.__getitem__)
            keep = [i for n, i in enumerate(order) if n == 0 or qids[i] != qids[order[n - 1]]]
            stats.add("skipped_duplicate_question", len(order) - len(keep))
            qids = array("q", (qids[i] for i in keep))
            image_ids = array("q", (image_ids[i] for i in keep))
            questions = [questions[i] for i in keep]
        self.qids, self.image_ids, self.questions = qids, image_ids, questions
        self.used = bytearray(len(qids))

    def find(self, qid: int) -> int | None:
        i = bisect_left(self.qids, qid)
        return i if i < len(self.qids) and self.qids[i] == qid else None

    def __len__(self) -> int:
        return len(self.qids)


class VQAReader(CountingReader):
    """Joins a questions file and an annotations file.

    Yields {question_id, image_id, question, answers (the 10 raw strings), multiple_choice_answer,
    answer_type, question_type, split}, in annotation-file order.
    """

    def __init__(self, questions: str, annotations: str) -> None:
        self.questions_path, self.annotations_path = str(questions), str(annotations)
        self.stats = ReadStats()
        self.data_subtype: str | None = None

    def _iter(self) -> Iterator[dict]:
        qreader = VQAQuestionReader(self.questions_path)
        table = _QuestionTable(iter(qreader), self.stats)
        self.stats.add("questions", len(table))
        self.stats.add("skipped_bad_record", qreader.stats.skipped_bad_record)
        self.data_subtype = qreader.data_subtype
        for ann in iter_json_items(self.annotations_path, "annotations.item", b"{"):
            record = self._join(table, ann)
            if record is not None:
                yield record
        self.stats.add("skipped_no_annotation", len(table) - sum(table.used))

    def _join(self, table: _QuestionTable, ann: object) -> dict | None:
        if not isinstance(ann, dict) or not isinstance(ann.get("answers"), list):
            self.stats.add("skipped_bad_annotation")
            return None
        i = table.find(ann.get("question_id")) if isinstance(ann.get("question_id"), int) else None
        if i is None:
            self.stats.add("skipped_no_question")
            return None
        if table.used[i]:
            self.stats.add("skipped_duplicate_annotation")
            return None
        if ann.get("image_id") is not None and ann["image_id"] != table.image_ids[i]:
            self.stats.add("skipped_image_id_mismatch")
            return None
        table.used[i] = 1
        answers = [a.get("answer") if isinstance(a, dict) else a for a in ann["answers"]]
        if len(answers) != 10:
            self.stats.add("answers_not_10")
        self.stats.add("joined")
        return {
            "question_id": table.qids[i],
            "image_id": table.image_ids[i],
            "question": table.questions[i],
            "answers": answers,
            "multiple_choice_answer": ann.get("multiple_choice_answer"),
            "answer_type": ann.get("answer_type"),
            "question_type": ann.get("question_type"),
            "split": self.data_subtype,
        }


def iter_vqa_questions(path: str) -> Iterator[dict]:
    """Stream a questions file: {question_id, image_id, question}."""
    return iter(VQAQuestionReader(path))


def iter_vqa(questions: str, annotations: str) -> Iterator[dict]:
    """Stream the questions ⋈ annotations join (see `VQAReader`)."""
    return iter(VQAReader(questions, annotations))


def iter_vqa_annotations(path: str) -> Iterator[dict]:
    """Stream the raw annotation records of an annotations file."""
    return iter_json_items(path, "annotations.item", b"{")
