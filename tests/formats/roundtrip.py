"""The round trip of `jade export` on any run: every kept pair and kept region of the published dataset is in
the export once, with equal text, and the export's counts equal stats.json's; a pair asked about a region
(`generate.condition: region`) comes back with its region and JADE type (jade, wds: equal; llava: the region's
box in its human turn). Each layout is read back with its
ecosystem's reader (webdataset) or checked against a JSON schema of its published description
(`export_schemas.py`). The export tests call these checks on their runs; on a real run:

    python -m tests.formats.roundtrip runs/sample [--out runs/sample-export] [--shard-size 1000]

exports the run in the three formats and checks each (exit 1 and the first failed check if one fails).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import jsonschema
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jade.app.export import export
from jade.formats.export_jade import box224
from jade.formats.export_llava import box_text
from jade.formats.export_wds import member_key
from tests.formats.export_schemas import JADE_DC, JADE_QA, JADE_QA_REGION, LLAVA


def published(run: Path) -> list[dict]:
    files = sorted((run / "dataset" / "data").glob("train-*.parquet"))
    return [r for f in files for r in pq.read_table(f, columns=["key", "url", "qa", "regions"]).to_pylist()]


def stats(run: Path) -> dict:
    return json.loads((run / "stats.json").read_text())


def check_jade(run: Path, out: Path) -> None:
    rows, s = published(run), stats(run)
    card = json.loads((out / "export.json").read_text())
    assert (card["images"], card["qa"], card["regions"]) == (s["images_ok"], s["qa_kept"], s["regions_kept"])
    assert card["collisions"]["images"] == 0
    assert len(list((out / "QA").glob("*.json"))) == len(list((out / "DC").glob("*.json"))) == s["images_ok"]
    seen_q = Counter()
    for row in rows:
        image = zlib.crc32((row["url"] or row["key"]).encode("utf-8")) & 0xFFFFFFFF
        qa = json.loads((out / "QA" / f"{image}.json").read_text())
        dc = json.loads((out / "DC" / f"{image}.json").read_text())
        jsonschema.validate(qa, JADE_QA)
        jsonschema.validate(dc, JADE_DC)
        assert [(q["question"], q["answer"]) for q in qa] == [(q["question"], q["answer"]) for q in row["qa"]]
        assert [q["prob"] for q in qa] == pytest.approx([q["score"] for q in row["qa"]])
        assert all(q["img_id"] == str(image) for q in qa)
        for got, pair in zip(qa, row["qa"], strict=True):
            if pair.get("region") is None:  # type-conditioned: not tied to a region
                assert "object" not in got and "region_description" not in got
            else:
                jsonschema.validate([got], JADE_QA_REGION)
                assert got["object"] == box224(pair["region"]["bbox"])
                assert got["region_description"] == pair["region"]["caption"]
            if pair.get("jade_type") is not None:
                assert got["type"] == pair["jade_type"]
        assert [d["region_description"] for d in dc] == [r["caption"] for r in row["regions"]]
        assert [d["object"] for d in dc] == [box224(r["bbox"]) for r in row["regions"]]
        seen_q.update(q["question_id"] for q in qa)
    assert all(n == 1 for n in seen_q.values())


def check_llava(run: Path, out: Path) -> None:
    rows, s = published(run), stats(run)
    data = json.loads((out / "llava.json").read_text())
    jsonschema.validate(data, LLAVA)
    parts = [
        json.loads(x)
        for p in sorted((out / "conversations").glob("*.jsonl"))
        for x in p.read_text().splitlines()
    ]
    assert parts == data
    card = json.loads((out / "export.json").read_text())
    assert (card["qa"], card["regions"]) == (s["qa_kept"], s["regions_kept"])
    assert card["images"] + card["images_without_turns"] == s["images_ok"] and card["images"] == len(data)
    by_id = {c["id"]: c for c in data}
    assert len(by_id) == len(data)
    for row in rows:
        want = [(_human(q), q["answer"]) for q in row["qa"]] + [
            (f"Please provide a short description for this region: {box_text(r['bbox'])}", r["caption"])
            for r in row["regions"]
        ]
        if not want:
            assert row["key"] not in by_id
            continue
        conv = by_id[row["key"]]["conversations"]
        assert [t["from"] for t in conv] == ["human", "gpt"] * len(want)
        assert conv[0]["value"].startswith("<image>\n")
        assert sum(t["value"].count("<image>") for t in conv) == 1
        got = [
            (conv[i]["value"].removeprefix("<image>\n"), conv[i + 1]["value"]) for i in range(0, len(conv), 2)
        ]
        assert got == want
        with Image.open(out / "images" / by_id[row["key"]]["image"]) as img:
            img.load()


def _human(pair: dict) -> str:
    """A kept pair's human turn: a pair asked about a region names its box."""
    if pair.get("region") is None:
        return pair["question"]
    return f"{pair['question']} (about the region {box_text(pair['region']['bbox'])})"


def check_wds(run: Path, out: Path, size: int) -> None:
    import webdataset as wds

    rows, s = published(run), stats(run)
    tars = sorted(out.glob("shard-*.tar"))
    assert len(tars) == -(-s["images_ok"] // size)
    samples = list(
        wds.WebDataset([str(t) for t in tars], shardshuffle=False)
        .decode("pil")
        .to_tuple("__key__", "jpg", "json")
    )
    assert len(samples) == s["images_ok"]
    got = {meta["key"]: (key, img, meta) for key, img, meta in samples}
    assert len(got) == len(samples)
    assert sum(len(m["qa"]) for _, _, m in samples) == s["qa_kept"]
    assert sum(len(m["regions"]) for _, _, m in samples) == s["regions_kept"]
    for row in rows:
        key, img, meta = got[row["key"]]
        assert key == member_key(row["key"]) and isinstance(img, Image.Image)
        assert [(q["question"], q["answer"]) for q in meta["qa"]] == [
            (q["question"], q["answer"]) for q in row["qa"]
        ]
        # the pairs' region and JADE type as published (absent from both under condition: type)
        assert [(q.get("jade_type"), q.get("region")) for q in meta["qa"]] == [
            (q.get("jade_type"), q.get("region")) for q in row["qa"]
        ]
        assert [r["caption"] for r in meta["regions"]] == [r["caption"] for r in row["regions"]]
        assert [r["bbox"] for r in meta["regions"]] == [r["bbox"] for r in row["regions"]]


CHECKS = {"jade": check_jade, "llava": check_llava, "wds": check_wds}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.formats.roundtrip")
    p.add_argument("run", help="a run directory with dataset/ and stats.json")
    p.add_argument("--out", help="where the exports go (default RUN-export)")
    p.add_argument("--shard-size", type=int, default=1000)
    a = p.parse_args(argv)
    run = Path(a.run)
    out = Path(a.out or f"{run}-export")
    s = stats(run)
    print(f"{run}: {s['images_ok']} images, {s['qa_kept']} kept pairs, {s['regions_kept']} kept regions")
    for fmt, check in CHECKS.items():
        t0 = time.time()
        export(run, fmt, out / fmt, shard_size=a.shard_size)
        try:
            check(run, out / fmt, a.shard_size) if fmt == "wds" else check(run, out / fmt)
        except AssertionError as e:
            print(f"{fmt}: round trip FAILED: {e}", file=sys.stderr)
            return 1
        print(f"{fmt}: round trip ok ({time.time() - t0:.1f} s, {out / fmt})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
