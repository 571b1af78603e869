"""`make bench`: every benchmark, side by side, into runs/bench/bench.json (DESIGN.md section 10).

python -m bench [--out runs/bench] [--quick]
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/bench")
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run, not figures to quote)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    from bench import generate

    report: dict = {"date": time.strftime("%Y-%m-%d"), "command": "make bench"}
    # Generate + filter against the per-question loop: its keys are the contract's top-level keys.
    report.update(generate.run(out, images=8 if a.quick else 24, rounds=1 if a.quick else 3))
    for name in ("ingest", "scaling"):  # further benchmarks, where present
        try:
            mod = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError:
            continue
        report[name] = mod.run(out, quick=a.quick)
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=str))
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, (dict, list))}, indent=2))
    print(f"bench: wrote {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
