"""paper_table.json (the contract: settings.<name>.<metric> = {mean, sd, seeds}, chance.<metric>,
differences.<claim>.<metric> = {mean, se}, min_detectable.<metric>) and its markdown rendering."""

from __future__ import annotations

from jade.app.paper_stats import ITEMS, bootstrap_items, min_detectable, paired, summary, verdict

METRICS = {  # the contract's metrics, then the recalls at 5 and 10
    "vqa_accuracy": "VQA acc",
    "retrieval_i2t_r1": "I→T R@1",
    "retrieval_t2i_r1": "T→I R@1",
    "cider": "CIDEr-D",
    "region_accuracy": "region acc@0.5",
    "retrieval_i2t_r5": "I→T R@5",
    "retrieval_t2i_r5": "T→I R@5",
    "retrieval_i2t_r10": "I→T R@10",
    "retrieval_t2i_r10": "T→I R@10",
}
CONTRACT = list(METRICS)[:5]
# "clearly off its baseline" (issue 26): a multiple of chance, or the prior plus a margin
CLEARS = {
    "vqa_accuracy": ("prior + 0.10", lambda m, c: m >= c + 0.10),
    "retrieval_i2t_r1": ("5x chance", lambda m, c: m >= 5 * c),
    "retrieval_t2i_r1": ("5x chance", lambda m, c: m >= 5 * c),
    "cider": ("2x the constant caption", lambda m, c: m >= 2 * c),
    "region_accuracy": ("chance + 0.10", lambda m, c: m >= c + 0.10),
}


def _number_row(label: str, values: dict, keys) -> str:
    """A table row of ``values[k]`` to 3 places for each k of ``keys`` ("n/a" where missing)."""
    cells = (f"{values[k]:.3f}" if values.get(k) is not None else "n/a" for k in keys)
    return f"| {label} | " + " | ".join(cells) + " |"


def table_json(
    results: dict, names: list[str], seeds: list[int], differences: dict, chance: dict, settings
) -> dict:
    per = {
        n: {k: {s: results[n, s].get(k) for s in seeds if (n, s) in results} for k in METRICS} for n in names
    }
    doc = {
        "settings": {n: {k: summary(per[n][k]) for k in METRICS} | {"label": settings[n][0]} for n in names},
        "chance": {k: chance.get(k) for k in METRICS}
        | {k: chance.get(k) for k in ("constant_caption", "constant_box", "region_constant_box")},
        "differences": {},
        "seeds": seeds,
        "se_method": "paired over seeds: sd of the per-seed differences / sqrt(seeds)",
        "se_items_method": "bootstrap over the test items (1,000 resamples) of the seed-averaged difference",
        "runs": {
            f"{n}/seed{s}": {k: results[n, s].get(k) for k in (*METRICS, "minutes", "steps")}
            for n in names
            for s in seeds
            if (n, s) in results
        },
    }
    for claim, (x, y) in differences.items():
        if x in per and y in per:
            doc["differences"][claim] = {k: paired(per[x][k], per[y][k]) for k in METRICS}
            doc["differences"][claim]["compares"] = [x, y]
            for k, item in ITEMS.items():
                items = {n: {s: results[n, s].get(item) for s in seeds if (n, s) in results} for n in (x, y)}
                doc["differences"][claim][k]["se_items"] = bootstrap_items(items[x], items[y])
    doc["min_detectable"] = {k: min_detectable(doc["differences"], k) for k in METRICS}
    doc["clears_baseline"] = {
        n: {
            k: bool(
                doc["settings"][n][k]["mean"] is not None
                and chance.get(k) is not None
                and CLEARS[k][1](doc["settings"][n][k]["mean"], chance[k])
            )
            for k in CONTRACT
        }
        for n in names
    }
    return doc


def _ms(x: dict | None, key: str = "sd") -> str:
    if not x or x.get("mean") is None:
        return "n/a"
    return f"{x['mean']:.3f} ± {x[key]:.3f}" if x.get(key) is not None else f"{x['mean']:.3f}"


def render(doc: dict) -> str:
    meta, names = doc.get("meta", {}), list(doc["settings"])
    lines = [
        "# The paper's claims, measured (the sample world)",
        "",
        f"Command: `{meta.get('command')}`, {meta.get('minutes', 0):.1f} min on {meta.get('device')}; commit "
        f"`{meta.get('commit', '')[:10]}`{' (with changes)' if meta.get('dirty') else ''}; seeds {doc['seeds']}.",
        "Cells: mean ± sd over seeds. Differences: mean ± standard error, "
        + doc["se_method"]
        + "; in brackets "
        "the standard error from the test items alone (" + doc["se_items_method"] + ").",
        "",
        "| setting | " + " | ".join(METRICS.values()) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for n in names:
        s = doc["settings"][n]
        lines.append(f"| {s['label']} | " + " | ".join(_ms(s[k]) for k in METRICS) + " |")
    ch = doc["chance"]
    lines.append(_number_row("chance / trivial baseline", ch, METRICS))
    lines += [
        "",
        "Every setting clears its baseline ("
        + ", ".join(f"{METRICS[k]}: {CLEARS[k][0]}" for k in CONTRACT)
        + "): "
        + (
            "yes."
            if all(all(v.values()) for v in doc["clears_baseline"].values())
            else "no: "
            + ", ".join(
                f"{n} {k}" for n, v in doc["clears_baseline"].items() for k, ok in v.items() if not ok
            )
            + "."
        ),
    ]
    lines += [
        "",
        "| claim | " + " | ".join(METRICS[k] for k in CONTRACT) + " |",
        "|---|" + "---|" * len(CONTRACT),
    ]
    for claim, d in doc["differences"].items():
        x, y = d["compares"]
        cells = [
            f"{_ms(d[k], 'se')}"
            + (f" (items: {d[k]['se_items']:.3f})" if d[k].get("se_items") is not None else "")
            + f"<br>{verdict(d[k], x, y)}"
            for k in CONTRACT
        ]
        lines.append(f"| {claim} ({x} − {y}) | " + " | ".join(cells) + " |")
    md = doc["min_detectable"]
    lines.append(_number_row("min. detectable (2 SE)", md, CONTRACT))
    lines += [
        "",
        f'Constant caption: "{ch["constant_caption"]}". Region chance: one of the image\'s object boxes at '
        f"random; a constant box (x0, y0, x1, y1) {tuple(round(v, 3) for v in ch['constant_box'])} would score "
        f"{ch.get('region_constant_box') or 0:.3f}.",
    ]
    if meta.get("benchmark_overlap"):
        o = meta["benchmark_overlap"]
        lines.append(
            f"Benchmark images identical to an image of the run's world: {o['identical']} of "
            f"{o['benchmark_images']} (checked against {o['world_images']})."
        )
    return "\n".join(lines) + "\n"
