"""`python -m bench.ingest --quick`: both parts run and report; the reader's memory stays bounded."""

import json

from bench import ingest


def test_bench_ingest_quick(tmp_path):
    report = ingest.run(tmp_path, quick=True)
    assert json.loads((tmp_path / "ingest.json").read_text()) == report
    tput, mem = report["throughput"], report["memory"]
    assert (
        tput["images"] == 300
        and report["ingest_images_per_cpu_s"] > 0
        and report["pillow_images_per_cpu_s"] > 0
    )
    assert (
        report["ingest_vs_pillow"] == tput["checker_vs_pillow"] > 0
    )  # reported, not asserted against a bound
    assert mem["read"]["count"] == mem["ingest"]["count"] == mem["regions"] > 50_000
    # streamed: reading adds less than the file's size to the process (json.load would add several times it)
    if mem["read"]["peak_of"] == "streaming":  # the peak mark could be reset (Linux /proc/self/clear_refs)
        assert mem["read"]["peak_rss_mb"] - mem["read"]["baseline_rss_mb"] < mem["file_mb"]
