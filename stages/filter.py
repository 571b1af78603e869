"""Filter: the rule, a pure function of the generated pairs and the filter model's stored answers (the `answer`
stage): a pair is kept only when both answers are equal after the official VQA v2 answer normalization
(`filter.normalization`, `filter.match`) and the filter's answer probability is at least `filter.min_score`.

A changed rule re-runs this stage only, without loading a model (`jade run --set filter.min_score=0.3`, `jade
refilter`). Every rejection goes to rejected/<shard>.parquet with the generator's answer, the filter's
answer and the reason (datatrove's "filters say why"): duplicate question, empty question, empty answer,
answer mismatch, low filter score, and the ill-posed: "no such object" / "not one object" when the filter
model, asked what the question presupposes ("Is there a red circle?", "How many red circles are there?" for
"What color is the red circle?", `filter.presupposition`), says there is none or not exactly one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from jade.formats.run_tables import FILTERED, Rejection, rejected_table
from jade.formats.samples import ShardRef
from jade.models import presupposition
from jade.models.tasks import QUESTION_TYPES
from jade.models.vqa_normalize import answers_match
from jade.pipeline.resources import StageResources
from jade.pipeline.rundir import RunDir
from jade.pipeline.stage import Runtime, ShardFiles, ShardResult, ShardStage
from jade.typed import ranged, validate_choice


@dataclass
class FilterRule:
    """The manifest's ``filter`` section: when a generated pair is kept."""

    normalization: str = "vqa"  # vqa (official VQA v2 answer normalization) | none
    match: str = "exact"  # exact: keep iff the normalized answers are equal
    min_score: float = ranged(0.0, ge=0, le=1)  # also require the filter's answer probability >= this
    # what a question presupposes (models.presupposition), checked with the filter model: "exists" asks
    # "Is there a red circle?" of every "the red circle", "count" asks "How many red circles are there?" (must
    # be 1), "unique" asks both (a pair is rejected when either fails)
    presupposition: str = "unique"  # none | exists | count | unique

    def validate(self, at: str) -> None:
        validate_choice(self.normalization, ("vqa", "none"), f"{at}.normalization")
        validate_choice(self.match, ("exact",), f"{at}.match")
        validate_choice(self.presupposition, ("none", "exists", "count", "unique"), f"{at}.presupposition")


def verdict(pair: dict, rule: FilterRule) -> tuple[str | None, str | None]:
    """(None, None) to keep the pair, else (the reason it is rejected, the presupposition check that failed)."""
    if pair["status"] != "ok":
        return pair["status"], None  # duplicate question, empty question (found by generate)
    if not pair["answer"]:
        return "empty answer", None
    if not answers_match(pair["answer"], pair["filter_answer"] or "", rule.normalization):
        return "answer mismatch", None
    if (pair["filter_score"] or 0.0) < rule.min_score:
        return "low filter score", None
    wanted = dict(presupposition.checks(pair["question"], rule.presupposition))
    for c in pair.get("checks") or []:
        if c["question"] in wanted and not answers_match(c["answer"] or "", c["expect"], "vqa"):
            reason = presupposition.failure(c["expect"], c["answer"] or "")
            return reason, presupposition.record(c["question"], c["answer"])
    return None, None


def apply_rule(
    pairs: list[dict], rule: FilterRule, shard_id: str
) -> tuple[dict[str, list], list[Rejection], dict]:
    """Split answered pairs into kept pairs (per key), rejected rows and counts (kept and rejected, overall and
    by type; rejections by reason)."""
    kept: dict[str, list] = {}
    rejected: list[Rejection] = []
    total: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    by_type: dict[str, Counter] = {t: Counter() for t in QUESTION_TYPES}
    for p in pairs:
        t = p["type"]
        reason, check = verdict(p, rule)
        if reason is None:
            kept.setdefault(p["key"], []).append(
                {
                    "question": p["question"],
                    "answer": p["answer"],
                    "type": t,
                    "filter_answer": p["filter_answer"],
                    "score": p["filter_score"],
                    "jade_type": p.get("jade_type"),
                    "region": p.get("region"),
                }
            )
            total["qa_kept"] += 1
            by_type.setdefault(t, Counter())["qa_kept"] += 1
        else:
            rejected.append(
                Rejection(
                    key=p["key"],
                    shard=shard_id,
                    question=p["question"],
                    type=t,
                    answer=p["answer"],
                    filter_answer=p["filter_answer"],
                    reason=reason,
                    question_score=p["question_score"],
                    answer_score=p["answer_score"],
                    filter_score=p["filter_score"],
                    check=check,
                    jade_type=p.get("jade_type"),
                    region=p.get("region"),
                )
            )
            total["qa_rejected"] += 1
            reasons[reason] += 1
            by_type.setdefault(t, Counter())["qa_rejected"] += 1
    counts = {
        "qa_kept": total["qa_kept"],
        "qa_rejected": total["qa_rejected"],
        "rejected_by_reason": dict(reasons),
        "by_type": {t: dict(c) for t, c in by_type.items() if c},
    }
    return kept, rejected, counts


class Filter(ShardStage):
    name = "filter"
    KEPT = ShardFiles("_work/filter/{shard}.parquet")  # per image: kept pairs and regions (`FILTERED`)
    REJECTED = ShardFiles("rejected/{shard}.parquet")  # every rejected pair, with the reason (`REJECTED`)
    outputs = (KEPT, REJECTED)

    def __init__(
        self, settings: FilterRule, generated: ShardFiles, answers: ShardFiles, resources: StageResources
    ):
        self.settings, self.generated, self.answers, self.resources = settings, generated, answers, resources
        self.inputs = (generated, answers)

    def worker(self, run: RunDir, runtime: Runtime):
        def one(shard: ShardRef) -> ShardResult:
            sid = shard.shard_id
            generated = run.read_table(self.generated, sid, columns=["key", "regions"]).to_pylist()
            pairs = run.read_table(self.answers, sid).to_pylist()
            kept, rejected, counts = apply_rule(pairs, self.settings, sid)
            rows = [
                {"key": r["key"], "qa": kept.get(r["key"], []), "regions": r["regions"]} for r in generated
            ]
            tables = {
                self.KEPT.path(sid): pa.Table.from_pylist(rows, schema=FILTERED),
                self.REJECTED.path(sid): rejected_table(rejected),
            }
            return ShardResult(tables, counts, len(rows))

        return one
