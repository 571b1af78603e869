"""Ingest: per image shard, decode and check every sample; usable ones -> `Ingest.SAMPLES`, the rest ->
`Ingest.FAILURES` (failures/<shard>.parquet) with the reason.

A sample is unusable when its download failed (img2dataset's own message, word for word), its image does
not decode or is a decompression bomb, it is smaller than `ingest.min_image_size` on a side ("too small:
WxH"), its caption is missing, or its key repeats one earlier in the shard ("duplicate key"). Keys are
namespaced by the shard's source folder (`ShardRef.key`), and the source's own key is kept in
``source_key``. Images are only checked here (convertible modes counted as converted): the model converts
and resizes them. Duplicates across shards are the next stage's business (`dedupe`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import fsspec
import pyarrow as pa

from jade.formats import shards
from jade.formats.errors import ImageError
from jade.formats.run_tables import SAMPLE, Failure, failures_table, reason_category
from jade.formats.samples import ShardRef
from jade.pipeline.logs import worker_logging
from jade.pipeline.resources import StageResources
from jade.pipeline.rundir import RunDir
from jade.pipeline.stage import Runtime, ShardFiles, ShardResult, ShardStage
from jade.typed import ConfigError, ranged, validate_choice

__all__ = [
    "ImagesSource",
    "Ingest",
    "IngestSettings",
    "PROGRESS_EVERY_S",
    "READER_NOTES",
    "check_shard",
]

log = logging.getLogger("jade")
PROGRESS_EVERY_S = 30.0  # a progress line per running shard at most this often
READER_NOTES = ("skipped", "sidecar", "damaged", "stats_json")  # reader counts that are not samples


@dataclass
class ImagesSource:
    """The image-text pairs to annotate (the manifest's ``sources.images``)."""

    format: str = "webdataset"  # webdataset | parquet
    urls: list[str] = field(default_factory=list)  # fsspec URLs, globs, brace ranges

    def validate(self, at: str) -> None:
        validate_choice(self.format, ("webdataset", "parquet"), f"{at}.format")
        if not self.urls:
            raise ConfigError(f"{at}.urls: at least one URL is required")


@dataclass(frozen=True)
class IngestSettings:
    # an image with a side shorter than this is unusable ("too small: WxH")
    min_image_size: int = ranged(32, ge=1)


def check_shard(shard: ShardRef, settings: IngestSettings) -> ShardResult:
    t0 = last = time.time()
    reader = shards.ShardReader(shard)
    ok: list[dict] = []
    failed: list[Failure] = []
    seen: set[str] = set()
    converted: Counter[str] = Counter()
    for s in reader:
        reason = s.error
        if reason is None and s.key in seen:
            reason = "duplicate key"
        if reason is None:
            try:
                img = shards.decode_image(s.image_bytes or b"")
            except ImageError as e:
                reason = e.reason
        if reason is None and min(img.size) < settings.min_image_size:
            reason = f"too small: {img.width}x{img.height}"
        if reason is None and not (s.caption or "").strip():
            reason = "missing caption"
        if reason is None:
            seen.add(s.key)
            ok.append(
                {
                    "key": shard.key(s.key),
                    "source_key": s.key,
                    "url": s.url,
                    "caption": s.caption,
                    "width": img.width,
                    "height": img.height,
                    "sha256": hashlib.sha256(s.image_bytes or b"").hexdigest(),
                }
            )
            if img.info.get("source_mode", "RGB") != "RGB":
                converted[img.info["source_mode"]] += 1
        else:
            failed.append(Failure("images", shard.shard_id, shard.key(s.key), s.url, Ingest.name, reason))
        if time.time() - last > PROGRESS_EVERY_S:
            last = time.time()
            log.info("ingest %s: %d samples so far (%d ok)", shard.shard_id, len(ok) + len(failed), len(ok))
    n = len(ok) + len(failed)
    fs, path = fsspec.core.url_to_fs(shard.url)
    if reader.stats.stats_json_mismatch:
        log.warning("ingest %s: _stats.json counts other successes than the shard holds", shard.shard_id)
    counts = {
        "images_in": n,
        "images_usable": len(ok),
        "images_failed": len(failed),
        "images_converted": sum(converted.values()),
        "converted_from": dict(converted),
        "failure_reasons": dict(Counter(reason_category(f.reason) for f in failed)),
    }
    seconds = max(time.time() - t0, 1e-6)
    note = {
        "checksum": f"{fs.checksum(path):x}",
        "images_per_s": round(n / seconds, 1),
        "reader": {k: v for k, v in reader.stats.as_dict().items() if k.startswith(READER_NOTES)},
    }
    log.debug(
        "ingest %s: %d in, %d ok, %d failed %s",
        shard.shard_id,
        n,
        len(ok),
        len(failed),
        counts["failure_reasons"],
    )
    tables = {
        Ingest.SAMPLES.path(shard.shard_id): pa.Table.from_pylist(ok, schema=SAMPLE),
        Ingest.FAILURES.path(shard.shard_id): failures_table(failed),
    }
    return ShardResult(tables, counts, n, note)


class Ingest(ShardStage):
    name = "ingest"
    SAMPLES = ShardFiles("_work/ingest/{shard}.parquet")  # the usable samples (`SAMPLE`)
    FAILURES = ShardFiles("failures/{shard}.parquet")
    outputs = (SAMPLES, FAILURES)

    def __init__(self, settings: IngestSettings, resources: StageResources):
        self.settings, self.resources = settings, resources

    def worker(self, run: RunDir, runtime: Runtime):
        worker_logging()
        return lambda shard: check_shard(shard, self.settings)
