"""Publish: dataset/ in Hugging Face layout (data/train-*.parquet + a dataset card), and stats.json.

stats.json holds the counts of section 7 and, for any run (no truth needed), what the data looks like
(`reports.stats`): counted per shard into its completion record and merged, like every other count, and
shown in the dataset card (`reports.card`).

Each Parquet file carries the `huggingface` schema metadata (`formats.dataset`), so `image` decodes to a PIL
image under both `load_dataset(dir)` and `load_dataset("parquet", data_files=...)`. Files are written per input
shard and committed like every other output (temporary name, rename, completion record last).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from jade.formats.dataset import Provenance, features
from jade.formats.run_tables import load_images
from jade.formats.samples import ShardRef
from jade.models import factory
from jade.models.specs import is_default_training
from jade.pipeline.resources import StageResources
from jade.pipeline.rundir import RunDir, fingerprint
from jade.pipeline.stage import Context, Runtime, ShardFiles, ShardResult, ShardStage, StageFiles
from jade.pipeline.stats import sum_counts
from jade.reports.card import CardInfo, DataFiles, dataset_card
from jade.reports.stats import merge_stats, shard_data_counts
from jade.typed import ranged, since


@dataclass
class PublishConfig:
    """The manifest's ``publish`` section."""

    embed_images: bool = True
    rows_per_file: int = ranged(5000, ge=1)


@dataclass(frozen=True)
class PublishSettings:
    embed_images: bool
    rows_per_file: int
    seed: int
    # condition region: each kept pair carries its jade_type and region (features(region=True))
    region: bool = since("issue-28", False)


class Publisher:
    def __init__(self, stage: Publish, run: RunDir, runtime: Runtime):
        self.run, self.stage, self.s = run, stage, stage.settings
        training = training_provenance(run, stage.models)
        self.schema = features(self.s.embed_images, bool(training), self.s.region).arrow_schema
        fps = {role: runtime.fingerprint(ckpt) for role, ckpt in stage.models.items()}
        rules = {
            f"{role}_attention": model_meta(run, ckpt).get("attention", "prefix")
            for role, ckpt in stage.models.items()
        }
        # what made a row: the models (their fine-tuning's fingerprints, attention rules and, when not the
        # default, training options), the settings
        self.provenance = dict(
            **fps, **rules, **training, config=fingerprint([*fps.values(), runtime.own]), seed=self.s.seed
        )

    def __call__(self, shard: ShardRef) -> ShardResult:
        sid, stage = shard.shard_id, self.stage
        samples = self.run.read_table(stage.samples, sid).to_pylist()
        filtered = {r["key"]: r for r in self.run.read_table(stage.kept, sid).to_pylist()}
        raw = (
            {k: b for k, _, b in load_images(shard, {s["key"] for s in samples})}
            if self.s.embed_images
            else {}
        )
        rows = []
        for s in samples:
            f = filtered.get(s["key"], {"qa": [], "regions": []})
            prov = Provenance(**self.provenance, source_shard=sid, source_key=s["source_key"]).row()
            row = {k: s[k] for k in ("key", "url", "caption", "width", "height")}
            row.update(qa=f["qa"], regions=f["regions"], provenance=prov)
            if self.s.embed_images:
                row["image"] = {"bytes": raw[s["key"]], "path": None}
            rows.append(row)
        per = max(1, self.s.rows_per_file)
        # no file at all for a shard with no usable image: a 0-row file breaks loading
        parts = -(-len(rows) // per)
        tables = {
            Publish.DATA.path(sid, p, parts): pa.Table.from_pylist(
                rows[p * per : (p + 1) * per], schema=self.schema
            )
            for p in range(parts)
        }
        rejected = self.run.read_table(stage.rejected, sid, columns=["type", "reason", "answer"])
        counts = {"images_published": len(rows), "data": shard_data_counts(rows, rejected.to_pylist())}
        return ShardResult(tables, counts, len(rows), {"files": parts})


class Publish(ShardStage):
    name = "publish"
    version = 3  # 3: provenance carries the source key and the attention rules; no file for an empty shard
    DATA = ShardFiles("dataset/data/train-{shard}-{part}-of-{parts}.parquet")
    STATS = StageFiles("stats.json")
    CARD = StageFiles("dataset/README.md")
    outputs = (DATA, STATS, CARD)

    def __init__(
        self,
        settings: PublishSettings,
        *,
        samples: ShardFiles,
        kept: ShardFiles,
        rejected: ShardFiles,
        models: dict[str, StageFiles],
        resources: StageResources,
        card: CardInfo,
    ):
        """``models``: each model role's checkpoint (the roles of `formats.dataset.Provenance`)."""
        self.settings, self.resources, self.card = settings, resources, card
        self.samples, self.kept, self.rejected, self.models = samples, kept, rejected, models
        self.inputs = (samples, kept, rejected, *models.values())

    def worker(self, run: RunDir, runtime: Runtime) -> Publisher:
        return Publisher(self, run, runtime)

    def finish(self, ctx: Context, published: list[str]) -> dict:
        """stats.json and the dataset card, over the shards published now."""
        run = ctx.run
        records = ctx.records(self, published)  # every shard stage's, aligned with `published`
        stats = merge_stats(records)
        if ctx.failed_shards:
            stats["failed_shards"] = ctx.failed_shards
        empty = empty_shards(published, records, self.name)
        if empty:
            stats["empty_shards"] = empty
        run.write_json(run.rel(self.STATS), stats)
        prov = {role: ctx.fp(ctx.producer(ckpt).name) for role, ckpt in self.models.items()}
        globs = [p for s in published for p in self.owns(s)]
        files = data_files(run, run.rel(self.CARD).rsplit("/", 1)[0], globs, records[self.name], published)
        training = bool(training_provenance(run, self.models))
        feats = features(self.settings.embed_images, training, self.settings.region)
        card = dataset_card(self.card, stats, prov, feats, files)
        run.write_bytes(run.rel(self.CARD), card.encode())
        return stats


def model_meta(run: RunDir, ckpt: StageFiles) -> dict:
    """A checkpoint's jade_model.json (`models.factory.JADE_META`), read through the run directory; {} if none."""
    return run.read_json(f"{run.rel(ckpt)}/{factory.JADE_META}") or {}


def training_provenance(run: RunDir, models: dict[str, StageFiles]) -> dict[str, str]:
    """Each model's training options (its jade_model.json ``training``: precision, micro_batch, checkpointing,
    freeze, lora, strategy, workers) as JSON under ``<role>_training``, when any of them is not the default; {}
    when every model was trained the default way (the provenance then has no such fields, as before the
    options existed)."""
    recs = {role: model_meta(run, ckpt).get("training") or {} for role, ckpt in models.items()}
    if all(is_default_training(rec) for rec in recs.values()):
        return {}
    return {f"{role}_training": json.dumps(rec, sort_keys=True) for role, rec in recs.items()}


def empty_shards(published: list[str], records: dict[str, list[dict]], publisher: str) -> dict[str, dict]:
    """The published shards in which no image was usable (no data file), with what became of their images:
    {shard: {"images_in": n, "failure_reasons": {reason: n}}}, summed over every stage's record of the shard."""
    out = {}
    for i, s in enumerate(published):
        if records[publisher][i]["images"]:
            continue
        counts = sum_counts(recs[i]["counts"] for recs in records.values())
        out[s] = {
            "images_in": counts.get("images_in", 0),
            "failure_reasons": dict(sorted(counts.get("failure_reasons", {}).items())),
        }
    return out


def data_files(
    run: RunDir, folder: str, globs: list[str], publish_records: list[dict], published: list[str]
) -> DataFiles:
    """The card's view of the data files (names relative to the dataset's ``folder``, both relative to the run):
    the files each shard's record names (the ``globs`` for records written before records named their files)."""
    if all("files" in r for r in publish_records):
        paths = sorted(f for r in publish_records for f in r["files"])
    else:
        paths = sorted({p for g in globs for p in run.glob(g)})
    meta = []
    for p in paths:
        with run.open(p) as f:
            meta.append(pq.read_metadata(f))
    return DataFiles(
        names=[p[len(folder) + 1 :] for p in paths],
        num_examples=sum(md.num_rows for md in meta),
        download_size=sum(run.size(p) for p in paths),
        num_bytes=sum(md.row_group(i).total_byte_size for md in meta for i in range(md.num_row_groups)),
        # each shard's record fingerprints the bytes of the files it wrote (pipeline.shardmap)
        fingerprint=fingerprint(
            sorted((s, r["output_fp"]) for s, r in zip(published, publish_records, strict=True))
        ),
    )
