"""`jade gallery DIR`: one static, self-contained HTML page (no server) to look at a run's data.

For the first N published images: the image (embedded as a data URI; large ones as a JPEG thumbnail) with
its dense-caption boxes drawn over it as absolutely positioned, numbered and labelled boxes; its kept pairs
(green) and rejected pairs (red, with the filter's answer, score and the reason). Checkboxes filter pairs by
question type and by kept/rejected, and hide the boxes; the state is kept in the URL
(``index.html#hide=rejected,other``), so a view can be shared or opened directly. Images come from the
dataset's `image` column, or, when it was published without images, from the source shards.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from jade.formats.run_tables import load_images
from jade.formats.samples import ShardRef
from jade.models.tasks import QUESTION_TYPES
from jade.pipeline.rundir import RunDir, atomic_write_bytes
from jade.stages.filter import Filter
from jade.stages.publish import Publish

BOX = "#ff00ff"  # box and label colour (the browser test looks for it)
KEPT, REJECTED = ("#dafbe1", "#1a7f37"), ("#ffebe9", "#cf222e")  # (background, text)
GALLERY = "gallery/index.html"  # the default page, relative to the run directory
THUMB = 384  # longest side of embedded images that are larger (re-encoded as JPEG)
SHOW = 320  # displayed width in CSS pixels

CSS = f"""
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 16px; color: #1f2328; background: #fff; }}
header {{ margin-bottom: 12px; }} h1 {{ font-size: 20px; margin: 0 0 4px; }}
#controls label {{ margin-right: 12px; white-space: nowrap; }} #controls fieldset {{ display: inline-block; }}
.card {{ display: flex; gap: 16px; align-items: flex-start; border-top: 1px solid #d0d7de; padding: 12px 0; }}
.frame {{ position: relative; flex: none; width: {SHOW}px; overflow: hidden; }}
.frame img {{ display: block; width: 100%; height: auto; }}
.box {{ position: absolute; box-sizing: border-box; border: 2px solid {BOX}; }}
.box span {{ position: absolute; left: -2px; top: -2px; max-width: max(calc(100% + 4px), 3em); overflow: hidden; text-overflow: ellipsis;
  white-space: nowrap; background: {BOX}; color: #fff; font-size: 11px; padding: 0 3px; }}
body.noboxes .box {{ display: none; }}
.info {{ flex: 1; min-width: 0; }} .info h2 {{ font-size: 14px; margin: 0; }} .alt {{ color: #57606a; margin: 2px 0; }}
ol.regions {{ margin: 4px 0; padding-left: 22px; font-size: 12px; }}
ul.qa {{ list-style: none; padding: 0; margin: 4px 0; }}
.pair {{ padding: 2px 6px; margin: 2px 0; border-radius: 3px; }}
.pair.kept {{ background: {KEPT[0]}; color: {KEPT[1]}; }} .pair.rejected {{ background: {REJECTED[0]}; color: {REJECTED[1]}; }}
.pair .t {{ font-size: 11px; opacity: .8; margin-right: 4px; }} .pair .f {{ font-size: 12px; }}
"""

JS = """
const boxes = document.getElementById('boxes');
const filters = [...document.querySelectorAll('#controls input[data-value]')];
function apply() {
  const hidden = new Set(filters.filter(c => !c.checked).map(c => c.dataset.value));
  if (!boxes.checked) hidden.add('boxes');
  document.querySelectorAll('.pair').forEach(p => {
    p.hidden = hidden.has(p.dataset.type) || hidden.has(p.dataset.status);
  });
  document.body.classList.toggle('noboxes', !boxes.checked);
  history.replaceState(null, '', hidden.size ? '#hide=' + [...hidden].map(encodeURIComponent).join(',') : '#');
}
const m = location.hash.match(/^#hide=(.*)$/);
const hide = new Set(m ? m[1].split(',').map(decodeURIComponent) : []);
filters.forEach(c => { c.checked = !hide.has(c.dataset.value); c.addEventListener('change', apply); });
boxes.checked = !hide.has('boxes');
boxes.addEventListener('change', apply);
apply();
"""


def _data_uri(data: bytes | None) -> str | None:
    """The image as a data URI (a JPEG thumbnail when larger than THUMB), None when it does not decode."""
    if not data:
        return None
    try:
        img = Image.open(io.BytesIO(data))
        fmt = (img.format or "").lower()
        if max(img.size) > THUMB or fmt not in ("jpeg", "png", "gif", "webp"):
            img = img.convert("RGB")
            img.thumbnail((THUMB, THUMB))
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=85)
            data, fmt = buf.getvalue(), "jpeg"
    except Exception:  # noqa: BLE001 - an undecodable image is shown as missing, not a crash
        return None
    return f"data:image/{fmt};base64,{base64.b64encode(data).decode()}"


def read_rows(run: RunDir, n: int) -> list[dict]:
    """The first `n` published rows (streamed: a large file is not read whole)."""
    rows: list[dict] = []
    for f in run.glob(Publish.DATA.glob()):
        with run.open(f) as fh:
            pf = pq.ParquetFile(fh)
            for batch in pf.iter_batches(batch_size=max(1, min(n, 256))):
                rows += batch.to_pylist()[: n - len(rows)]
                if len(rows) >= n:
                    return rows
    return rows


def images_from_shards(run: RunDir, rows: list[dict]) -> dict[str, bytes]:
    """Image bytes of rows published without images, read back from their source shards."""
    wanted = defaultdict(set)
    for r in rows:
        wanted[(r.get("provenance") or {}).get("source_shard")].add(r["key"])
    found = {}
    for s in (run.read_json("run.json") or {}).get("shards", []):
        keys = wanted.get(s["shard_id"])
        if not keys:
            continue
        try:
            found.update({k: raw for k, _, raw in load_images(ShardRef(**s), keys)})
        except OSError:
            continue  # the source is gone: those images are shown as missing
    return found


def rejected_pairs(run: RunDir, rows: list[dict]) -> dict[str, list[dict]]:
    """Rejected pairs of the given rows, from the rejected/ files of their source shards (all if unknown)."""
    keys = {r["key"] for r in rows}
    sources = {(r.get("provenance") or {}).get("source_shard") for r in rows}
    files = run.glob(Filter.REJECTED.glob())
    if None not in sources:
        files = [f for f in files if f in {run.rel(Filter.REJECTED, s) for s in sources}]
    out = defaultdict(list)
    for f in files:
        for r in run.read_table(f).to_pylist():
            if r["key"] in keys:
                out[r["key"]].append(r)
    return out


def _pair_html(qa: dict, kept: bool) -> str:
    e = html.escape
    score = qa.get("score") if kept else qa.get("filter_score")
    filt = "filter: " + (e(qa["filter_answer"]) if qa.get("filter_answer") is not None else "(not asked)")
    if score is not None:
        filt += f" ({score:.2f})"
    if not kept:
        filt += f" · {e(qa['reason'])}"
    status = "kept" if kept else "rejected"
    return (
        f'<li class="pair {status}" data-type="{e(qa["type"])}" data-status="{status}">'
        f'<span class="t">{e(qa["type"])}</span><b>{e(qa["question"] or "(empty)")}</b> → '
        f'{e(qa["answer"] or "(none)")} <span class="f">[{filt}]</span></li>'
    )


def card_html(row: dict, image: bytes | None, rejected: list[dict]) -> str:
    e = html.escape
    uri = _data_uri(image)
    w, h = row.get("width") or 1, row.get("height") or 1
    img = (
        f'<img src="{uri}" alt="{e(row["key"])}">'
        if uri
        else f'<div style="aspect-ratio:{w}/{h};background:#eee;text-align:center">image not available</div>'
    )
    boxes = []
    for i, r in enumerate(row["regions"], 1):
        x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in r["bbox"])
        boxes.append(
            f'<div class="box" title="{i}. {e(r["caption"])}" style="left:{100 * x0:.3f}%;top:{100 * y0:.3f}%;'
            f'width:{100 * (x1 - x0):.3f}%;height:{100 * (y1 - y0):.3f}%"><span>{i} {e(r["caption"])}</span></div>'
        )
    regions = "".join(f"<li>{e(r['caption'])} <small>({r['score']:.2f})</small></li>" for r in row["regions"])
    pairs = [_pair_html(q, True) for q in row["qa"]] + [_pair_html(q, False) for q in rejected]
    return (
        f'<section class="card" data-key="{e(row["key"])}"><div class="frame">{img}{"".join(boxes)}</div>'
        f'<div class="info"><h2>{e(row["key"])}</h2><p class="alt">{e(row.get("caption") or "")}</p>'
        f'<ol class="regions">{regions}</ol><ul class="qa">{"".join(pairs)}</ul></div></section>'
    )


def build_gallery(run_dir: str | Path, out: str | Path | None = None, n: int = 48) -> Path | str:
    """Write the gallery of the first `n` published images (to ``out``, else into the run directory); returns
    the HTML file's path (a URL when the run directory is on an object store)."""
    run = RunDir(run_dir)
    data = run.rel(Publish.DATA, "x").rsplit("/", 1)[0]
    if not run.exists(data):
        raise SystemExit(f"jade gallery: {run.uri(data)} not found (publish has not run)")
    rows = read_rows(run, n)
    images = {r["key"]: (r.get("image") or {}).get("bytes") for r in rows}
    if any(v is None for v in images.values()):
        images.update(images_from_shards(run, [r for r in rows if images[r["key"]] is None]))
    rejected = rejected_pairs(run, rows)
    stats = run.read_json(run.rel(Publish.STATS)) or {}
    e = html.escape
    summary = f"{len(rows)} images shown"
    if stats:
        summary += (
            f" · run: {stats.get('images_ok')} images, {stats.get('qa_kept')} kept and "
            f"{stats.get('qa_rejected')} rejected pairs (keep rate {stats.get('keep_rate', 0):.2f})"
        )
    checks = "".join(
        f'<label><input type="checkbox" data-value="{e(v)}" checked> {e(v)}</label>' for v in QUESTION_TYPES
    )
    status = "".join(
        f'<label><input type="checkbox" data-value="{v}" checked> {v}</label>' for v in ("kept", "rejected")
    )
    name = run.url.rstrip("/").rsplit("/", 1)[-1]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>JADE gallery: {e(name)}</title>
<style>{CSS}</style></head>
<body><header><h1>JADE gallery: {e(name)}</h1><p>{e(summary)}</p>
<form id="controls"><fieldset><legend>question type</legend>{checks}</fieldset>
<fieldset><legend>pairs</legend>{status}</fieldset>
<fieldset><legend>regions</legend><label><input type="checkbox" id="boxes" checked> boxes</label></fieldset></form>
</header><main>
{"".join(card_html(r, images.get(r["key"]), rejected.get(r["key"], [])) for r in rows)}
</main><script>{JS}</script></body></html>
"""
    if out:
        atomic_write_bytes(out, page.encode())
        return Path(out)
    run.write_bytes(GALLERY, page.encode())
    return Path(run.uri(GALLERY)) if run.local else run.uri(GALLERY)
