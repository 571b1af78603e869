"""A prototype, for issue 14's 20x target: the hf engine with decode batches of mixed prompt lengths, measured
against the engine as it is and the per-question loop on a run directory that `bench.generate` made.

Not the project's engine (models/backends/hf.py is unchanged): `MixedHF` subclasses `HFBackend` and changes two
things. `_batches` fills a batch up to ``batch_size`` decode rows whatever the prompt lengths (the engine makes
one batch per prompt length); `_decode` prefills each length group as the engine does, then left-pads every
group's key/value cache to the longest and decodes all rows together, with a 2-D attention mask (the pads
masked) and explicit position ids (PaliGemma's are 1-indexed: a row's next position is its own cache length
plus the step plus 1). Greedy answers and samples stay those of the engine (checked on every round here).

    python -m bench.engine_proto runs/bench/generate-1x-image [--rounds 3] [--threads 1]

Prints, per configuration, the best wall and CPU seconds of generate + filter over the rounds, and the speedup
over the per-question loop (`bench.generate.run_naive`), interleaved with it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from transformers import DynamicCache

from bench.generate import Factory, Naive, factory_outputs, run_naive
from jade.models.backends.hf import HFBackend
from jade.models.backends.sampling import choose
from jade.pipeline.rundir import RunDir


class MixedHF(HFBackend):
    """HFBackend with decode batches of mixed prompt lengths (left-padded caches, masked)."""

    mixed = True

    def _batches(self, units):
        if not self.mixed:
            return super()._batches(units)
        units = sorted(units, key=lambda u: len(u.ids))
        batches, cur, rows = [], [], 0
        for u in units:
            if cur and rows + len(u.rows) > self.batch_size:
                batches.append(cur)
                cur, rows = [], 0
            cur.append(u)
            rows += len(u.rows)
        if cur:
            batches.append(cur)
        return batches

    @torch.inference_mode()
    def _decode(self, prepared, units, requests):
        dev = self.device
        groups = {}
        for k, u in enumerate(units):
            groups.setdefault(len(u.ids), []).append(k)
        # 1. prefill each length group, then left-pad every cache to the longest
        parts = []
        for _, ks in sorted(groups.items()):
            lg, cache = self._prefill(prepared, [units[k] for k in ks])
            parts.append((ks, lg, cache))
        total = max(c.get_seq_length() for _, _, c in parts)
        order = [k for ks, _, _ in parts for k in ks]
        logits = torch.cat([lg for _, lg, _ in parts])
        lengths = torch.tensor([c.get_seq_length() for ks, _, c in parts for _ in ks], device=dev)
        cache = DynamicCache(config=self.model.config)
        n_layers = len(parts[0][2].layers)
        for i in range(n_layers):
            ks_, vs_ = [], []
            for _, _, c in parts:
                k, v = c.layers[i].keys, c.layers[i].values
                pad = total - k.shape[2]
                if pad:
                    z = k.new_zeros(k.shape[0], k.shape[1], pad, k.shape[3])
                    k, v = torch.cat([z, k], 2), torch.cat([z, v], 2)
                ks_.append(k)
                vs_.append(v)
            cache.update(torch.cat(ks_), torch.cat(vs_), i)
        mask = (torch.arange(total, device=dev)[None, :] >= (total - lengths)[:, None]).long()
        units = [units[k] for k in order]
        rows = [row for u in units for row in u.rows]
        owner = torch.tensor([k for k, u in enumerate(units) for _ in u.rows], device=dev)
        if len(rows) != len(units):
            cache.batch_select_indices(owner)
        logits, mask, pos = logits[owner], mask[owner], lengths[owner]
        reqs = [requests[i] for i, _ in rows]
        greedy = torch.tensor([r.greedy for r in reqs], device=dev)
        top_k = torch.tensor([r.top_k for r in reqs], device=dev)
        temp = torch.tensor([r.temperature for r in reqs], device=dev, dtype=torch.float32)
        seed = torch.tensor([r.seed for r in reqs], device=dev, dtype=torch.int64)
        sample = torch.tensor([j for _, j in rows], device=dev, dtype=torch.int64)
        limit = torch.tensor([r.max_new_tokens for r in reqs], device=dev)
        alive = torch.arange(len(rows), device=dev)
        steps = int(limit.max())
        tokens = torch.full((len(rows), steps), -1, dtype=torch.long, device=dev)
        logps = torch.zeros((len(rows), steps), device=dev)
        eos = torch.tensor(sorted(self.eos), device=dev)
        padded = bool((mask == 0).any())
        for step in range(steps):
            tok, lp = choose(logits, greedy, top_k, temp, seed, sample, step)
            tokens[alive, step], logps[alive, step] = tok, lp
            done = torch.isin(tok, eos) | (limit <= step + 1)
            if bool(done.all()):
                break
            if bool(done.any()):
                keep = (~done).nonzero()[:, 0]
                cache.batch_select_indices(keep)
                alive, tok, mask, pos = alive[keep], tok[keep], mask[keep], pos[keep]
                greedy, top_k, temp, seed, sample, limit = (
                    x[keep] for x in (greedy, top_k, temp, seed, sample, limit)
                )
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], 1)
            kw = {"attention_mask": mask, "position_ids": (pos + step + 1)[:, None]} if padded else {}
            logits = self.model(
                input_ids=tok[:, None], past_key_values=cache, use_cache=True, logits_to_keep=1, **kw
            ).logits[:, -1]
        for row, toks, lps in zip(rows, tokens.tolist(), logps.tolist(), strict=True):
            n = next((j for j, t in enumerate(toks) if t < 0), len(toks))
            yield row, self._completion(toks[:n], lps[:n])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="a run directory of bench.generate (generate-1x-<rule>)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    root = Path(a.root)
    fac = Factory(root, a.threads)
    engine = {name: w.backend for name, (_, w) in fac.stages.items()}

    def use(cls, rows: int) -> None:
        for name, (_, w) in fac.stages.items():
            b = engine[name]
            b = b if cls is None else cls(b.model, b.processor, batch_size=rows, attention=b.attention)
            b.batch_size = rows
            if name == "filter":
                w._backend = b
            else:
                w.backend = b

    fac()
    ref = factory_outputs(root)
    gen, fil = Naive(RunDir(root).checkpoint("generator")), Naive(RunDir(root).checkpoint("filter"))
    configs = {
        "engine, 32 rows (as the stages ask)": (None, 32),
        "engine, 256 rows": (None, 256),
        "mixed lengths, 256 rows": (MixedHF, 256),
    }
    times: dict[str, list] = {}
    for r in range(a.rounds):
        for name, (cls, rows) in configs.items():
            use(cls, rows)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
