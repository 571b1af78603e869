"""The `jade` command: run a manifest, show a run's progress, evaluate, look at and refilter its data."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from jade.formats.errors import FormatError
from jade.pipeline.logs import console_logging
from jade.pipeline.progress import Interrupted, stop_reason
from jade.pipeline.rundir import RunDir, RunDirError, RunLockedError
from jade.typed import ConfigError as ManifestError

# Exit codes of `jade run` (docs/runs.md): 0 done (shards with no usable image are named on stderr), 1 shards
# failed (run again to retry them), 2 invalid manifest or input, or a role to fine-tune does not fit the GPU
# (`jade plan`), 3 the run directory is held by another run,
# 4 done but no image at all was usable (the dataset is empty), 128 + N stopped by signal N (130: Ctrl-C).
EXIT_FAILED_SHARDS, EXIT_INVALID, EXIT_LOCKED, EXIT_EMPTY = 1, 2, 3, 4


def _on_sigterm(signum, frame) -> None:
    raise Interrupted("SIGTERM")


def _setup_env(verbose: bool = False) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no downloads at run time unless the user asks
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    console_logging(verbose)


def cmd_run(args: argparse.Namespace) -> int:
    from jade.app.plan import PlanError
    from jade.app.runner import run_manifest
    from jade.pipeline.executor import LocalExecutor, RayExecutor

    executor = LocalExecutor() if args.executor == "local" else RayExecutor(address=args.address)
    try:
        summaries = run_manifest(
            args.manifest,
            args.out,
            args.set,
            args.stages.split(",") if args.stages else None,
            executor=executor,
            gpu_memory=args.gpu_memory,
        )
    except PlanError as e:  # a role's fine-tuning would not fit the GPU: nothing was done
        print(f"jade: does not fit: {e}", file=sys.stderr)
        return EXIT_INVALID
    except ManifestError as e:
        print(f"jade: invalid manifest: {e}", file=sys.stderr)
        return EXIT_INVALID
    except FormatError as e:  # a malformed annotation file: the message names the file and position
        print(f"jade: unreadable input: {e}", file=sys.stderr)
        return EXIT_INVALID
    except RunDirError as e:
        print(f"jade: {e}", file=sys.stderr)
        return EXIT_INVALID
    except RunLockedError as e:
        print(f"jade: {e}", file=sys.stderr)
        return EXIT_LOCKED
    except (Interrupted, KeyboardInterrupt) as e:
        print(
            f"jade: stopped ({stop_reason(e)}); what was committed is kept: run the same command again to "
            "go on from there",
            file=sys.stderr,
        )
        return 128 + (signal.SIGTERM if isinstance(e, Interrupted) else signal.SIGINT)
    finally:
        executor.shutdown()
    stats = summaries.get("publish", {}).get("stats")
    if stats:
        from jade.reports.stats import COUNTS

        print(json.dumps({k: stats[k] for k in (*COUNTS, "keep_rate")}, indent=2))
    failed = {shard: f for s in summaries.values() for shard, f in (s.get("failed_shards") or {}).items()}
    if stats and stats.get("empty_shards"):
        print(
            f"jade: {len(stats['empty_shards'])} shard(s) had no usable image and publish no file: "
            + "; ".join(
                f"{shard} ({e['images_in']} images: "
                + ", ".join(f"{r} {n}" for r, n in e["failure_reasons"].items())
                + ")"
                for shard, e in sorted(stats["empty_shards"].items())
            )
            + ". Every image's reason is in failures/.",
            file=sys.stderr,
        )
    if failed:
        print(
            f"jade: {len(failed)} shard(s) failed and are not published: "
            + "; ".join(f"{shard} ({f['stage']}: {f['error']})" for shard, f in sorted(failed.items()))
            + ". The other shards are complete; run the same command again to retry them.",
            file=sys.stderr,
        )
        return EXIT_FAILED_SHARDS
    if stats is not None and stats["images_ok"] == 0:
        print(
            f"jade: no image was usable ({stats['images_in']} in, {stats['images_failed']} failed): the dataset "
            "is empty. The reasons are in failures/ and `jade status DIR --shards`.",
            file=sys.stderr,
        )
        return EXIT_EMPTY
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from jade.app.plan import cmd_plan as plan

    return plan(args)


def cmd_status(args: argparse.Namespace) -> int:
    from jade.app.status import status_lines

    try:
        print("\n".join(status_lines(args.dir, args.shards)))
    except FileNotFoundError as e:
        print(f"jade: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from jade.reports.evaluate import evaluate_run

    report = evaluate_run(args.dir)
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, dict)}, indent=2))
    return 0


def cmd_gallery(args: argparse.Namespace) -> int:
    from jade.reports.gallery import build_gallery

    print(build_gallery(args.dir, args.out, args.n))
    return 0


def cmd_refilter(args: argparse.Namespace) -> int:
    from jade.app.refilter import RefilterError, refilter

    run = RunDir(args.dir)
    before = run.read_json("stats.json") or {}
    try:
        refilter(args.dir, args.set)
    except (ManifestError, RefilterError) as e:
        print(f"jade refilter: {e}", file=sys.stderr)
        return 2
    except RunLockedError as e:
        print(f"jade refilter: {e}", file=sys.stderr)
        return EXIT_LOCKED
    after = run.read_json("stats.json") or {}
    keys = ("qa_kept", "qa_rejected", "keep_rate", "rejected_by_reason")
    print(
        json.dumps(
            {
                "before": {k: before.get(k) for k in keys},
                "after": {k: after.get(k) for k in keys},
                "keep_rate_by_type": {t: b["keep_rate"] for t, b in after.get("by_type", {}).items()},
            },
            indent=2,
        )
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from jade.app.export import export
    from jade.formats.export_common import ExportError

    try:
        counts = export(
            args.dir, args.format, args.out, args.shard_size, log=lambda m: print(m, file=sys.stderr)
        )
    except ExportError as e:
        print(f"jade export: {e}", file=sys.stderr)
        return 2
    print(
        json.dumps({k: v for k, v in counts.items() if not isinstance(v, dict)} | {"out": args.out}, indent=2)
    )
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from jade.app.pretrain import run_pretrain
    from jade.models.pretrain.config import PretrainConfig
    from jade.pipeline.config import apply_overrides
    from jade.pipeline.executor import LocalExecutor, RayExecutor
    from jade.pipeline.resources import TrainResources

    # The run's own `pretrain:` settings (its manifest, in run.json), then --set (pretrain.KEY or KEY)
    raw = ((RunDir(args.dir).read_json("run.json") or {}).get("manifest") or {}).get("pretrain") or {}
    sets = [s if s.startswith("pretrain.") else f"pretrain.{s}" for s in args.set]
    try:
        cfg = PretrainConfig.from_dict(apply_overrides({"pretrain": raw}, sets)["pretrain"])
    except ValueError as e:
        print(f"jade pretrain: {e}", file=sys.stderr)
        return 2
    executor = LocalExecutor() if args.executor == "local" else RayExecutor(address=args.address)
    res = TrainResources(workers=args.workers, num_cpus=args.num_cpus)
    try:
        m = run_pretrain(
            args.dir, cfg, executor, res, out=args.out, fresh=args.fresh, eval_only=args.eval_only
        )
    finally:
        executor.shutdown()
    keys = (
        "vqa_accuracy",
        "retrieval_i2t_r1",
        "retrieval_i2t_r5",
        "retrieval_t2i_r1",
        "retrieval_t2i_r5",
        "cider",
        "steps",
    )
    print(json.dumps({k: m.get(k) for k in keys}, indent=2))
    return 0


def cmd_base(args: argparse.Namespace) -> int:
    from jade.app.base import RECIPE, make_base
    from jade.pipeline.executor import LocalExecutor, RayExecutor

    executor = LocalExecutor() if args.executor == "local" else RayExecutor(address=args.address)
    try:
        meta = make_base(executor, args.recipe or RECIPE, args.set, args.work, args.out)
    except ValueError as e:
        print(f"jade base: {e}", file=sys.stderr)
        return 2
    finally:
        executor.shutdown()
    print(
        json.dumps(
            {k: meta[k] for k in ("name", "examples_seen", "train_seconds", "weights_sha256")}, indent=2
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    _setup_env()
    p = argparse.ArgumentParser(prog="jade", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a manifest end to end (or --stages a,b)")
    r.add_argument("manifest", help="a name under manifests/ or a path to a YAML file")
    r.add_argument("--out", help="run directory (default runs/<manifest name>)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a manifest key")
    r.add_argument("--stages", help="comma-separated subset of stages to run")
    r.add_argument("--executor", choices=["ray", "local"], default="ray")
    r.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local cluster)")
    r.add_argument(
        "--gpu-memory",
        type=float,
        metavar="GiB",
        help="check the memory plan against this (default: detected)",
    )
    r.set_defaults(fn=cmd_run)
    pl = sub.add_parser("plan", help="memory plan of every training role (no data, no weights needed)")
    pl.add_argument("manifest", help="a name under manifests/ or a path to a YAML file")
    pl.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a manifest key")
    pl.add_argument(
        "--gpu-memory", type=float, metavar="GiB", help="GPU memory to check against (default: detected)"
    )
    pl.add_argument("--json", action="store_true", help="{role: {params, ..., peak_gib, fits}}")
    pl.set_defaults(fn=cmd_plan)
    s = sub.add_parser("status", help="per-stage and per-shard progress of a run directory")
    s.add_argument("dir")
    s.add_argument("--shards", action="store_true", help="list every finished shard")
    s.set_defaults(fn=cmd_status)
    e = sub.add_parser("eval", help="data-quality report of a sample-world run (eval.json)")
    e.add_argument("dir")
    e.set_defaults(fn=cmd_eval)
    g = sub.add_parser("gallery", help="static HTML page of images with their boxes and QA pairs")
    g.add_argument("dir")
    g.add_argument("--out", help="HTML file to write (default DIR/gallery/index.html)")
    g.add_argument("--n", type=int, default=48, help="number of images (the first N published)")
    g.set_defaults(fn=cmd_gallery)
    f = sub.add_parser("refilter", help="re-apply a changed filter rule to the stored answers and republish")
    f.add_argument("dir")
    f.add_argument(
        "--set",
        action="append",
        required=True,
        metavar="filter.KEY=VALUE",
        help="filter.normalization, filter.match or filter.min_score",
    )
    f.set_defaults(fn=cmd_refilter)
    x = sub.add_parser("export", help="the published dataset as JADE's CC3M-QA-DC, LLaVA or WebDataset files")
    x.add_argument("dir", help="a run directory with dataset/ and stats.json")
    x.add_argument("--format", required=True, choices=["jade", "llava", "wds"])
    x.add_argument("--out", required=True, help="the folder to write (a re-run resumes it)")
    x.add_argument("--shard-size", type=int, default=1000, help="images per shard (per tar for wds)")
    x.set_defaults(fn=cmd_export)
    t = sub.add_parser("pretrain", help="multi-task pretraining on DIR/dataset, then downstream evaluation")
    t.add_argument("dir", help="a run directory with dataset/ (published); writes DIR/pretrain/")
    t.add_argument("--out", help="output directory (default DIR/pretrain)")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a PretrainConfig field: steps, batch_size, mixing, attention, data, tasks, seed, ...",
    )
    t.add_argument("--fresh", action="store_true", help="start over instead of resuming the checkpoint")
    t.add_argument("--eval-only", action="store_true", help="evaluate the existing checkpoint only")
    t.add_argument("--workers", type=int, default=1, help="Ray Train workers")
    t.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per Ray Train worker")
    t.add_argument("--executor", choices=["ray", "local"], default="ray")
    t.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local cluster)")
    t.set_defaults(fn=cmd_pretrain)
    b = sub.add_parser("base", help="pretrain the sample world's tiny base (models/bases/<name>)")
    b.add_argument("--recipe", help="a base recipe YAML (default manifests/base.yaml)")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    b.add_argument("--work", help="pretraining directory (default runs/base-<name>; a rerun resumes)")
    b.add_argument("--out", help="where to export the base (default models/bases/<name>)")
    b.add_argument("--executor", choices=["ray", "local"], default="local")
    b.add_argument("--address", help="Ray cluster address (with --executor ray)")
    b.set_defaults(fn=cmd_base)
    args = p.parse_args(argv)
    if hasattr(args, "dir"):
        try:
            found = RunDir(args.dir).exists("")  # a local folder, or a prefix on an object store
        except (ValueError, ImportError, OSError) as e:
            print(f"jade: {args.dir}: {e}", file=sys.stderr)
            return 2
        if not found:
            print(f"jade: no such directory: {args.dir}", file=sys.stderr)
            return 2
    if threading.current_thread() is not threading.main_thread():
        return args.fn(args)
    before = signal.signal(signal.SIGTERM, _on_sigterm)  # stop like Ctrl-C: each stage says where it stopped
    try:
        return args.fn(args)
    finally:
        signal.signal(signal.SIGTERM, before)


if __name__ == "__main__":
    sys.exit(main())
