"""GQA 1.2 readers: questions (balanced or the chunked all-questions form) and scene graphs.

Question files are JSON objects keyed by question id (strings with leading zeros, kept as strings);
they are streamed one question at a time. `test`/`challenge` records carry no `answer`: they are
skipped and counted (`stats.skipped_no_answer`). Image ids are strings (e.g. "2371269", "n161313").
"""

from __future__ import annotations

from collections.abc import Iterator

from .common import CountingReader, ReadStats, iter_json_kvitems
from .urls import expand_paths


def gqa_image_path(images_dir: str, image_id: str) -> str:
    """`{images_dir}/{image_id}.jpg`."""
    return f"{str(images_dir).rstrip('/')}/{image_id}.jpg"


image_path = gqa_image_path


class GQAQuestionReader(CountingReader):
    """Streams GQA question files.

    `paths`: a file, directory (all `*.json` inside, e.g. `train_all_questions/`), glob or brace
    pattern, or a list of these. Yields {qid, image_id, question, answer, full_answer, types, annotations}
    (`annotations`: the published token -> object id maps, ``{"question": {"2": "1234"}, ...}``).
    """

    def __init__(self, paths: str | list[str]) -> None:
        self.paths = [paths] if isinstance(paths, str) else list(paths)
        self.stats = ReadStats()

    def files(self) -> list[str]:
        """The question files, expanded and naturally sorted (chunk_2 before chunk_10)."""
        return expand_paths(self.paths, suffixes=(".json", ".json.gz"))

    def _iter(self) -> Iterator[dict]:
        for path in self.files():
            self.stats.add("files")
            for qid, record in iter_json_kvitems(path, "", b"{"):
                if not isinstance(record, dict) or not record.get("question") or "imageId" not in record:
                    self.stats.add("skipped_bad_record")
                    continue
                if record.get("answer") is None:
                    self.stats.add("skipped_no_answer")
                    continue
                self.stats.add("questions")
                yield {
                    "qid": str(qid),
                    "image_id": str(record["imageId"]),
                    "question": record["question"],
                    "answer": record["answer"],
                    "full_answer": record.get("fullAnswer"),
                    "types": record.get("types") or {},
                    "annotations": record.get("annotations") or {},
                }


class SceneGraphReader(CountingReader):
    """Streams a GQA scene-graph file: (image_id, graph) with the graph dict as published
    (`width`, `height`, `objects` {object_id: {name, x, y, w, h, attributes, relations}}, ...)."""

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self.stats = ReadStats()

    def _iter(self) -> Iterator[tuple[str, dict]]:
        for image_id, graph in iter_json_kvitems(self.path, "", b"{"):
            if not isinstance(graph, dict) or not isinstance(graph.get("objects"), dict):
                self.stats.add("skipped_bad_record")
                continue
            self.stats.add("images")
            yield str(image_id), graph


def iter_questions(paths: str | list[str]) -> Iterator[dict]:
    """Stream GQA questions with answers: {qid, image_id (str), question, answer, full_answer, types}."""
    return iter(GQAQuestionReader(paths))


def iter_scene_graphs(path: str) -> Iterator[tuple[str, dict]]:
    """Stream a scene-graph file: (image_id, graph dict)."""
    return iter(SceneGraphReader(path))
