"""`jade export`: each layout read back with its ecosystem's reader (webdataset) or checked against a JSON
schema written from its published description, every count equal to stats.json's, and the round trip: every
kept pair and kept region once, with equal text (the checks: `roundtrip.py`, which also runs them on a real
run)."""

import io
import json
import shutil
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jade.app.cli import main
from jade.app.export import export
from jade.formats import export_common
from jade.formats.dataset import features
from jade.formats.export_common import ExportError
from jade.formats.export_jade import box224, jade_type
from jade.formats.export_llava import box_text, image_path
from jade.formats.export_wds import member_key
from tests.formats.roundtrip import check_jade, check_llava, check_wds, stats


def _image(fmt: str, color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, format=fmt)
    return buf.getvalue()


def _pair(i: int, q: str, a: str, t: str, *asked) -> dict:
    """A kept pair; ``asked``: (jade_type, (bbox, caption)) of a region-conditioned one."""
    pair = {"question": q, "answer": a, "type": t, "filter_answer": a, "score": 0.5 + i / 10}
    if asked:
        pair |= {"jade_type": asked[0], "region": {"bbox": asked[1][0], "caption": asked[1][1]}}
    return pair


def _row(key: str, url: str | None, qa: list, regions: list, fmt: str = "JPEG") -> dict:
    return {
        "key": key,
        "image": {"bytes": _image(fmt), "path": None},
        "url": url,
        "caption": f"alt text of {key}",
        "width": 40,
        "height": 30,
        "qa": [_pair(i, *p) for i, p in enumerate(qa)],
        "regions": [{"bbox": b, "caption": c, "score": 0.75} for b, c in regions],
        "provenance": {
            k: "x"
            for k in ("generator", "filter", "config", "source_shard", "source_key", "generator_attention")
        }
        | {"seed": 0, "filter_attention": "image"},
    }


def write_published(run: Path, files: list[list[dict]], region: bool = False) -> Path:
    """A hand-written published dataset: data files of rows, and the stats.json that counts them;
    ``region``: made under `generate.condition: region` (its pairs carry jade_type and region)."""
    schema = features(True, region=region).arrow_schema
    for i, rows in enumerate(files):
        path = run / "dataset" / "data" / f"train-s{i}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    all_rows = [r for rows in files for r in rows]
    counts = {
        "images_ok": len(all_rows),
        "qa_kept": sum(len(r["qa"]) for r in all_rows),
        "regions_kept": sum(len(r["regions"]) for r in all_rows),
    }
    (run / "stats.json").write_text(json.dumps(counts))
    return run


HAND = [
    [
        _row(
            "cc3m/000000001",
            "http://example.com/a.jpg",
            [("Is there a red circle?", "yes", "yes/no"), ("How many squares are there?", "2", "number")],
            [([0.1, 0.2, 0.5, 0.6], "a red circle"), ([0.0, 0.0, 1.0, 1.0], "the whole picture")],
        ),
        _row("cc3m/000000002", None, [("What color is the square?", "blue", "other")], [], fmt="PNG"),
    ],
    [
        _row("cc3m/000000003", "http://example.com/c.jpg", [], []),  # nothing kept
        _row(
            "odd/key.with dots", "http://example.com/d.jpg", [("Which shape is red?", "circle", "other")], []
        ),
    ],
]


# ------------------------------------------------------------------------------------------------ pure parts
def test_jade_type_by_leading_word():
    assert jade_type("Is there a red circle?", "yes/no") == "binary"
    assert jade_type("Are the circles blue?", "yes/no") == "binary"
    assert jade_type("How many squares are there?", "number") == "how"
    assert jade_type("What color is the circle?", "other") == "what"
    assert jade_type("Which shape is red?", "other") == "what"
    assert jade_type("Where is the red circle?", "other") == "where"
    assert jade_type("Whose hat is this?", "other") == "who"
    assert jade_type("Why is it red?", "other") == "why" and jade_type("When was it?", "other") == "when"
    assert jade_type("Red or blue?", "other") == "what" and jade_type("", "yes/no") == "binary"
    assert jade_type("Count the squares.", "number") == "how"


def test_box_notations():
    assert box224([0.1, 0.2, 0.5, 1.0]) == [22, 45, 112, 224]
    assert box224([-0.01, 0.0, 1.02, 0.5]) == [0, 0, 224, 112]
    assert box_text([0.1, 0.25, 0.5, 1.0]) == "[0.100,0.250,0.500,1.000]"


def test_names_never_leave_their_folder():
    assert image_path("cc3m/000010023", "jpg") == "cc3m/000010023.jpg"
    for bad in ("../etc/passwd", "/abs/x", "a//b", "a/./b", "..", "sp ace"):
        p = image_path(bad, "jpg")
        assert p.startswith("_/") and ".." not in p.split("/") and not p.startswith("/")
    assert member_key("cc3m/000010023") == "cc3m/000010023"
    assert member_key("a.b c") == "a%2Eb%20c"
    assert member_key("/abs") == "%2Fabs" and member_key("a//b") == "a%2F%2Fb"


def test_plan_cuts_files_into_shards(tmp_path):
    run = write_published(tmp_path / "run", HAND)
    files = export_common.data_files(run)
    shards = export_common.plan(files, 3)
    assert [s.rows for s in shards] == [3, 1]
    assert [(s.file.name, s.start, s.stop) for s in shards[0].spans] == [
        (files[0].name, 0, 2),
        (files[1].name, 0, 1),
    ]
    keys = [r["key"] for s in shards for r in export_common.rows(s, ["key"])]
    assert keys == [r["key"] for rows in HAND for r in rows]


CIRCLE = ([0.1, 0.2, 0.5, 0.6], "a red circle")
SQUARE = ([0.625, 0.5, 1.0, 0.875], "a blue square on the right")
# a dataset made under `generate.condition: region`: every kept pair was asked about one kept region
REGION_HAND = [
    [
        _row(
            "cc3m/000000011",
            "http://example.com/r1.jpg",
            [
                ("What color is the circle?", "red", "other", "what", CIRCLE),
                ("Is there a red circle?", "yes", "yes/no", "binary", CIRCLE),
                ("Where is the blue square?", "right", "other", "where", SQUARE),
            ],
            [CIRCLE, SQUARE],
        ),
        _row("cc3m/000000012", None, [], [SQUARE], fmt="PNG"),  # a region asked nothing that was kept
    ],
    [
        _row(
            "cc3m/000000013",
            "http://example.com/r3.jpg",
            [("How many squares are there?", "1", "number", "how", SQUARE)],
            [SQUARE],
        ),
        _row("cc3m/000000014", "http://example.com/r4.jpg", [], []),  # nothing kept
    ],
]


# ------------------------------------------------------------------------------------------------- jade
def test_jade_round_trip_on_a_factory_run(fake_run, tmp_path):
    s = stats(fake_run)
    assert s["images_ok"] > 5 and s["qa_kept"] > 0 and s["regions_kept"] > 0  # a test that can fail
    out = tmp_path / "jade"
    export(fake_run, "jade", out, shard_size=5)
    check_jade(fake_run, out)
    assert "left out" in (out / "README.md").read_text()


def test_jade_collisions_are_recorded_not_lost(tmp_path):
    """Two images with one URL (one crc32) cannot both be QA/<img_id>.json: the later is listed, with its
    counts, within a shard and across shards, and the counts still add up to stats.json's."""
    same = "http://example.com/same.jpg"
    files = [
        [_row("k/1", same, [("Is it red?", "yes", "yes/no")], [([0.1, 0.1, 0.2, 0.2], "a dot")])],
        [
            _row("k/2", same, [("Is it blue?", "no", "yes/no")], []),
            _row("k/3", same, [], [([0.1, 0.1, 0.2, 0.2], "x"), ([0.3, 0.3, 0.4, 0.4], "y")]),
            _row("k/4", "http://example.com/other.jpg", [("What is it?", "a dot", "other")], []),
        ],
    ]
    run = write_published(tmp_path / "run", files)
    for size in (1, 4):  # across shards; within one shard
        out = tmp_path / f"out{size}"
        c = export(run, "jade", out, shard_size=size)
        lost = c["collisions"]
        assert [x["key"] for x in lost["list"]] == ["k/2", "k/3"]
        assert (lost["images"], lost["qa"], lost["regions"]) == (2, 1, 2)
        assert (c["images"], c["qa"], c["regions"]) == (2, 2, 1)
        image = zlib.crc32(same.encode()) & 0xFFFFFFFF
        assert json.loads((out / "QA" / f"{image}.json").read_text())[0]["question"] == "Is it red?"
        assert "k/2" in (out / "README.md").read_text()
        assert not (out / "_staging").exists()


def test_jade_resumes_an_interrupted_shard(tmp_path, monkeypatch):
    """Killed between renames: the re-run moves the rest and neither loses nor doubles nor calls an image of
    its own a collision."""
    run = write_published(tmp_path / "run", HAND)
    out = tmp_path / "out"
    import os as _os

    real, calls = _os.replace, []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError("killed")
        return real(src, dst)

    monkeypatch.setattr("jade.formats.export_jade.os.replace", flaky)
    with pytest.raises(OSError):
        export(run, "jade", out, shard_size=10)
    monkeypatch.undo()
    c = export(run, "jade", out, shard_size=10)
    assert c["collisions"]["images"] == 0
    check_jade(run, out)


# ------------------------------------------------------------------------------------------------ llava
def test_llava_round_trip_on_a_factory_run(fake_run, tmp_path):
    out = tmp_path / "llava"
    export(fake_run, "llava", out, shard_size=5)
    check_llava(fake_run, out)


def test_llava_hand_written(tmp_path):
    run = write_published(tmp_path / "run", HAND)
    out = tmp_path / "out"
    c = export(run, "llava", out, shard_size=3)
    check_llava(run, out)
    assert c["images_without_turns"] == 1
    assert (out / "images" / "cc3m" / "000000002.png").exists()  # the published bytes, their own format
    assert len(list((out / "images" / "_").iterdir())) == 1  # the odd key, hashed inside the folder


# -------------------------------------------------------------------------------------------------- wds
def test_wds_read_back_with_webdataset(fake_run, tmp_path):
    out = tmp_path / "wds"
    export(fake_run, "wds", out, shard_size=4)
    check_wds(fake_run, out, 4)


def test_wds_hand_written_converts_and_resumes(tmp_path):
    run = write_published(tmp_path / "run", HAND)
    out = tmp_path / "out"
    c = export(run, "wds", out, shard_size=2)
    check_wds(run, out, 2)
    assert c["converted_to_jpeg"] == 1
    # a re-run skips finished shards; a lost shard (no record) is written again, identically
    first = (out / "shard-000000.tar").read_bytes()
    stamp = (out / "shard-000001.tar").stat().st_mtime_ns
    (out / "shard-000000.tar").unlink()
    (out / "_state" / "000000.json").unlink()
    export(run, "wds", out, shard_size=2)
    assert (out / "shard-000000.tar").read_bytes() == first
    assert (out / "shard-000001.tar").stat().st_mtime_ns == stamp
    check_wds(run, out, 2)


# ------------------------------------------------------------------------------------------------ errors
def test_refuses_to_mix_exports_and_bad_input(tmp_path):
    run = write_published(tmp_path / "run", HAND)
    export(run, "wds", tmp_path / "out", shard_size=2)
    with pytest.raises(ExportError, match="another dataset or with other options"):
        export(run, "wds", tmp_path / "out", shard_size=3)
    with pytest.raises(ExportError, match="stats.json"):
        export(tmp_path / "nothing", "jade", tmp_path / "o2")
    stats_path = run / "stats.json"
    stats_path.write_text(json.dumps({**json.loads(stats_path.read_text()), "qa_kept": 99}))
    with pytest.raises(ExportError, match="disagree"):
        export(run, "jade", tmp_path / "o3")


def test_cli(tmp_path, capsys):
    run = write_published(tmp_path / "run", HAND)
    assert main(["export", str(run), "--format", "jade", "--out", str(tmp_path / "j")]) == 0
    assert json.loads(capsys.readouterr().out)["qa"] == 4
    shutil.rmtree(run / "dataset")
    assert main(["export", str(run), "--format", "jade", "--out", str(tmp_path / "k")]) == 2


def test_roundtrip_command_on_a_run(fake_run, tmp_path, capsys):
    """`python -m tests.formats.roundtrip RUN`: the three exports and their checks; a changed text fails it."""
    from tests.formats import roundtrip

    out = tmp_path / "x"
    assert roundtrip.main([str(fake_run), "--out", str(out), "--shard-size", "5"]) == 0
    assert capsys.readouterr().out.count("round trip ok") == 3
    qa = next(p for p in sorted((out / "jade" / "QA").glob("*.json")) if json.loads(p.read_text()))
    pairs = json.loads(qa.read_text())
    pairs[0]["answer"] += " (changed)"
    qa.write_text(json.dumps(pairs))  # the re-run resumes (the shard has its record), the check reads it
    assert roundtrip.main([str(fake_run), "--out", str(out), "--shard-size", "5"]) == 1


# -------------------------------------------------------------------------------- region-conditioned data
@pytest.mark.parametrize("fmt", ["jade", "llava", "wds"])
def test_region_dataset_round_trips(tmp_path, fmt):
    """Every kept pair of a region-conditioned dataset comes back once, with equal text and its region and
    JADE type (jade: object, region_description, type; llava: the region's box in the human turn; wds: as
    published), the counts equal stats.json's, and the card says the questions were asked per region."""
    run = write_published(tmp_path / "run", REGION_HAND, region=True)
    out = tmp_path / fmt
    export(run, fmt, out, shard_size=3)
    check = {"jade": check_jade, "llava": check_llava, "wds": lambda r, o: check_wds(r, o, 3)}[fmt]
    check(run, out)
    assert json.loads((out / "export.json").read_text())["condition"] == "region"
    readme = (out / "README.md").read_text()
    assert "generate.condition: region" in readme and "left out**" not in readme


def test_region_pairs_in_each_layout(tmp_path):
    """The region fields as each layout writes them, spelled out for one pair."""
    run = write_published(tmp_path / "run", REGION_HAND, region=True)
    export(run, "jade", tmp_path / "jade")
    image = zlib.crc32(b"http://example.com/r1.jpg") & 0xFFFFFFFF
    first = json.loads((tmp_path / "jade" / "QA" / f"{image}.json").read_text())[2]
    assert list(first) == [
        "question",
        "answer",
        "prob",
        "type",
        "object",
        "region_description",
        "img_id",
        "question_id",
    ]
    assert (first["type"], first["object"]) == ("where", [140, 112, 224, 196])
    assert first["region_description"] == "a blue square on the right"
    export(run, "llava", tmp_path / "llava")
    conv = json.loads((tmp_path / "llava" / "llava.json").read_text())[0]["conversations"]
    assert (
        conv[0]["value"] == "<image>\nWhat color is the circle? (about the region [0.100,0.200,0.500,0.600])"
    )
    assert conv[6:8] == [
        {
            "from": "human",
            "value": "Please provide a short description for this region: [0.100,0.200,0.500,0.600]",
        },
        {"from": "gpt", "value": "a red circle"},
    ]
    export(run, "wds", tmp_path / "wds")
    import webdataset as wds

    meta = next(iter(wds.WebDataset(str(tmp_path / "wds" / "shard-000000.tar"), shardshuffle=False).decode()))
    assert meta["json"]["qa"][0]["jade_type"] == "what"
    assert meta["json"]["qa"][0]["region"]["caption"] == "a red circle"
    assert meta["json"]["qa"][0]["region"]["bbox"] == pytest.approx(CIRCLE[0])


def test_region_dataset_bad_jade_type_is_refused(tmp_path):
    rows = [
        _row("k/1", "http://example.com/x.jpg", [("Is it red?", "yes", "yes/no", "maybe", CIRCLE)], [CIRCLE])
    ]
    run = write_published(tmp_path / "run", [rows], region=True)
    with pytest.raises(ExportError, match="jade_type 'maybe', not one of JADE's types"):
        export(run, "jade", tmp_path / "out")


def test_type_dataset_card_is_unchanged(tmp_path):
    """A type-conditioned dataset's export: no region fields anywhere, and the card says why."""
    run = write_published(tmp_path / "run", HAND)
    for fmt in ("jade", "llava", "wds"):
        export(run, fmt, tmp_path / fmt, shard_size=3)
        assert json.loads((tmp_path / fmt / "export.json").read_text())["condition"] == "type"
        assert "condition: region" not in (tmp_path / fmt / "README.md").read_text()
    assert (
        "**`object` and\n  `region_description` are left out**"
        in (tmp_path / "jade" / "README.md").read_text()
    )
