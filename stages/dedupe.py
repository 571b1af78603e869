"""Dedupe: across shards, a sample whose key, or (with `ingest.dedupe`) whose image bytes, an earlier shard
already holds is not annotated twice. Per shard, in shard order: the usable samples minus those ->
_work/dedupe/<shard>.parquet, and the duplicates -> failures/<shard>.duplicates.parquet ("duplicate key: also
in shard S", "duplicate image: same as KEY"). Within a shard, ingest already caught repeated keys; a repeated
image within a shard is caught here. Only earlier shards count, so adding a shard at the end re-runs nothing
else, and a re-run gives the same answer whatever order shards finished in."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from jade.formats.run_tables import failures_table
from jade.formats.samples import ShardRef
from jade.pipeline.config import Manifest, StageResources
from jade.pipeline.rundir import RunDir
from jade.pipeline.stage import Runtime, ShardResult


@dataclass(frozen=True)
class DedupeSettings:
    by_content: bool


class Deduper:
    def __init__(self, run: RunDir, settings: DedupeSettings, order: list[str]):
        self.run, self.settings, self.order = run, settings, order

    def index(self, shard_id: str) -> pa.Table:
        return pq.read_table(self.run.work("ingest") / f"{shard_id}.parquet", columns=["key", "sha256"])

    def __call__(self, shard: ShardRef) -> ShardResult:
        keys: dict[str, str] = {}  # the first shard of each key, over the earlier shards
        images: dict[str, str] = {}  # the first key of each image
        for earlier in self.order[: self.order.index(shard.shard_id)]:
            if not (self.run.work("ingest") / f"{earlier}.parquet").exists():
                continue  # failed at ingest in this run: nothing of it is used
            t = self.index(earlier)
            for k, h in zip(t.column("key").to_pylist(), t.column("sha256").to_pylist(), strict=True):
                keys.setdefault(k, earlier)
                images.setdefault(h, k)
        table = pq.read_table(self.run.work("ingest") / f"{shard.shard_id}.parquet")
        keep: list[int] = []
        dups: list[tuple] = []
        reasons: dict[str, int] = {}
        for i, row in enumerate(table.select(["key", "url", "sha256"]).to_pylist()):
            reason = None
            if row["key"] in keys:
                reason = f"duplicate key: also in shard {keys[row['key']]}"
            elif self.settings.by_content and row["sha256"] in images:
                reason = f"duplicate image: same as {images[row['sha256']]}"
            else:
                keys[row["key"]] = shard.shard_id
                images.setdefault(row["sha256"], row["key"])
                keep.append(i)
                continue
            dups.append(("images", shard.shard_id, row["key"], row["url"], "dedupe", reason))
            category = reason.split(":", 1)[0]
            reasons[category] = reasons.get(category, 0) + 1
        counts = {"images_ok": len(keep), "images_failed": len(dups), "failure_reasons": reasons}
        tables = {f"_work/dedupe/{shard.shard_id}.parquet": table.take(pa.array(keep, type=pa.int64()))}
        if dups:
            tables[f"failures/{shard.shard_id}.duplicates.parquet"] = failures_table(dups)
        return ShardResult(tables, counts, table.num_rows)


class Dedupe:
    name = "dedupe"
    after = ("ingest",)
    reads_earlier = True  # a shard's output depends on the shards before it

    def settings(self, m: Manifest) -> DedupeSettings:
        return DedupeSettings(m.ingest.dedupe)

    def resources(self, m: Manifest) -> StageResources:
        return StageResources(actors=1, num_cpus=m.resources.ingest.num_cpus)

    def owns(self, shard_id: str) -> list[str]:
        return [f"_work/dedupe/{shard_id}.parquet", f"failures/{shard_id}.duplicates.parquet"]

    def worker(self, run: RunDir, settings: DedupeSettings, runtime: Runtime):
        return Deduper(run, settings, list(runtime.shard_order))
