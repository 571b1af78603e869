"""`make bench`: every benchmark, side by side, into runs/bench/bench.json (DESIGN.md section 10).

python -m bench [--out runs/bench] [--quick] [--threads N] [--models DIR] [--no-vllm] [--only generate,ingest]

The generate benchmark's keys (the factory against the per-question loop and vLLM, under each attention
rule) are the report's top-level keys; the others sit under their names ("ingest", "scaling").
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from pathlib import Path

PARTS = ("generate", "ingest", "scaling")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not figures to quote)")
    p.add_argument("--threads", type=int, help="torch threads (default: the machine's cores)")
    p.add_argument("--models", help="trained generator/ and filter/ checkpoints (default: random weights)")
    p.add_argument("--no-vllm", action="store_true", help="leave vLLM out of the generate benchmark")
    p.add_argument("--only", default=",".join(PARTS), help="benchmarks to run, comma-separated")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    only = [x.strip() for x in a.only.split(",") if x.strip()]
    report: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "command": "python -m bench " + " ".join(argv or sys.argv[1:]),
    }
    if "generate" in only:
        from bench import generate

        report.update(
            generate.run(
                out,
                images=8 if a.quick else 24,
                models=a.models,
                threads=a.threads,
                rounds=1 if a.quick else 3,
                vllm=not a.no_vllm,
            )
        )
    for name in ("ingest", "scaling"):
        if name not in only:
            continue
        mod = importlib.import_module(f"bench.{name}")
        kwargs = {"models": a.models} if name == "scaling" else {}
        report[name] = mod.run(out, quick=a.quick, **kwargs)
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, (dict, list))}, indent=2))
    print(f"bench: wrote {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
