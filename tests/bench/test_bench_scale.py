"""`make bench-scale` at a toy size: both runs finish, every shard stage is measured, ratios are computed."""

import json

import pytest

from bench import scale

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def test_bench_scale_reports_every_stage_at_both_sizes(tmp_path):
    report = scale.run(tmp_path, sizes=(2, 3), per_shard=3, dedupe=(20_000,), big_shard=40)
    assert json.loads((tmp_path / "scale.json").read_text()) == report
    for size in ("2", "3"):
        r = report["sizes"][size]
        assert r["shards"] == int(size) and r["images_in"] == int(size) * 3
        for st in scale.SHARD_STAGES:
            assert r["stages"][st]["shards"] == int(size)
            assert r["stages"][st]["seconds_per_image"] > 0
        assert r["peak_rss"]["driver_mb"] > 0 and r["files_total"] > 0
    assert set(report["ratio_per_image"]) == set(scale.SHARD_STAGES)
    assert set(report["ratio_cpu_per_image"]) == set(scale.SHARD_STAGES)
    assert report["dedupe_pass"][0]["images"] == 20_000
    one = report["one_shard"]
    assert (
        one["shards"] == 1
        and one["stages"]["ingest"]["images"] == 40
        and set(one["stages"]) == {"ingest", "dedupe"}
    )
