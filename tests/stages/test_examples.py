"""Annotation jobs travel to the workers as JSON; the worker reads them through the typed source settings
again, so a misspelt key fails with its dotted name (not as an attribute error deep in a reader)."""

from dataclasses import asdict

import pytest

from jade.stages.examples import READERS, GQASource, VGSource, VQASource, job_source
from jade.typed import ConfigError


@pytest.mark.parametrize(
    "kind, src",
    [
        ("vg_regions", VGSource("img.json", "regions.json", ["VG_100K", "VG_100K_2"])),
        ("vg_qas", VGSource("img.json", "regions.json", ["VG_100K"], qas="qas.json")),
        ("gqa", GQASource(["q1.json", "q2.json"], "images")),
        ("vqa", VQASource("q.json", "a.json", "train2014")),
    ],
)
def test_a_job_carries_its_typed_source(kind, src):
    assert kind in READERS
    assert job_source({"kind": kind, "src": asdict(src)}) == src


def test_a_misspelt_source_key_is_named():
    with pytest.raises(ConfigError, match=r"^sources\.vqa\.anotations: unknown key"):
        job_source({"kind": "vqa", "src": {"questions": "q.json", "anotations": "a.json"}})
