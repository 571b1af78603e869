"""The hf engine's decode batching, measured: the engine as the stages run it against the batching it had
before issue 14, and the per-question loop, interleaved on a run directory that `bench.generate` made.

Configurations, each the generate and filter stages' own shard workers (`bench.generate.Factory`):

- ``per prompt length, 32 rows``: the batching before issue 14, one decode batch per prompt length and at
  most 32 rows a batch (`PerLength` splits the engine's batches by prompt length; a batch of one length
  takes the engine's unpadded path, the code that ran then);
- ``mixed lengths, 32 rows``: the engine now (rows of any prompt lengths decode together), 32 rows;
- ``mixed lengths, <N> rows``: the engine as the stages run it, with `resources.<stage>.decode_rows` rows
  (default 256).

Every configuration's answers (generator, filter and presupposition checks) must equal the engine's and the
loop's, on every round. Prints per configuration the best wall and CPU seconds of generate + filter over the
rounds and the speedup over the per-question loop (`bench.generate.run_naive`), and with ``--profile FILE``
writes a cProfile of one more pass of the engine as the stages run it.

    python -m bench.batching runs/bench/generate-1x-image [--rounds 3] [--threads 1] [--profile FILE]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch

from bench.generate import Factory, Naive, bench_manifest, factory_outputs, run_naive
from jade.models.backends.hf import HFBackend, Unit
from jade.pipeline.rundir import RunDir
from jade.stages.finetune import Finetune


class PerLength(HFBackend):
    """The engine with the batching it had before issue 14: one batch per prompt length."""

    def _batches(self, units: list[Unit]) -> list[list[Unit]]:
        by_len: dict[int, list[Unit]] = defaultdict(list)
        for u in units:
            by_len[len(u.ids)].append(u)
        batches: list[list[Unit]] = []
        for _, group in sorted(by_len.items()):
            batches += super()._batches(group)
        return batches


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="a run directory of bench.generate (generate-1x-<rule>)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--profile", help="write a cProfile (pstats) of one pass of the engine here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    root = Path(a.root)
    fac = Factory(root, a.threads)
    engine = {name: w.backend for name, (_, w) in fac.stages.items()}
    built = {name: b.batch_size for name, b in engine.items()}  # resources.<stage>.decode_rows
    res = bench_manifest(root).resources
    rows = "/".join(str(n) for n in dict.fromkeys((res.generate.decode_rows, res.filter.decode_rows)))

    def use(cls: type[HFBackend] | None, decode_rows: int | None) -> None:
        """Every stage worker on `cls` (None: the engine the stage built) with `decode_rows` rows (None: the
        stage's own)."""
        for name, (_, w) in fac.stages.items():
            b, n = engine[name], decode_rows or built[name]
            if cls is not None:
                b = cls(b.model, b.processor, batch_size=n, attention=b.attention)
            b.batch_size = n
            w.backend = b

    fac()
    ref = factory_outputs(root)
    gen, fil = (
        Naive(RunDir(root).path(Finetune.checkpoint("generator"))),
        Naive(RunDir(root).path(Finetune.checkpoint("filter"))),
    )
    configs = {
        "per prompt length, 32 rows (before issue 14)": (PerLength, 32),
        "mixed lengths, 32 rows": (None, 32),
        f"mixed lengths, {rows} rows (as the stages run it)": (None, None),
    }
    times: dict[str, list] = {}
    for r in range(a.rounds):
        for name, (cls, n) in configs.items():
            use(cls, n)
            x = fac()
            if factory_outputs(root) != ref:
                raise SystemExit(f"{name}: outputs differ from the engine's")
            times.setdefault(name, []).append(
                (sum(v["seconds"] for v in x.values()), sum(v["cpu_seconds"] for v in x.values()))
            )
        nv = run_naive(root, gen, fil, ref)
        if nv["outputs"] != ref:
            raise SystemExit("the per-question loop's outputs differ from the engine's")
        times.setdefault("per-question loop", []).append((nv["seconds"], nv["cpu_seconds"]))
        print(
            f"round {r + 1}:",
            json.dumps({k: [round(x, 2) for x in v[-1]] for k, v in times.items()}),
            flush=True,
        )
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in times.items()}
    loop = best["per-question loop"]
    report = {
        k: {"seconds": w, "cpu_seconds": c, "speedup": loop[0] / w, "speedup_cpu": loop[1] / c}
        for k, (w, c) in best.items()
    }
    print(json.dumps(report, indent=2))
    if a.profile:
        use(None, None)
        cProfile.runctx("fac()", globals(), {"fac": fac}, a.profile)
        print(f"profile of one pass: {a.profile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
