"""The page itself: static HTML for what never changes on the page (run header, iteration table, plots) and the
template (`page.html`, `page.css`, `page.js`, shipped in this package) filled in one pass.

Why everything inline: the page must open from `file://` with no server and no network, so the script, the style
and the data (`<script type="application/json">`) are part of `index.html`; only the excerpts, thumbnails and
plots are separate files beside it, referenced by relative paths.
"""
from __future__ import annotations

import html
import json
import math
import re
from importlib import resources
from typing import Any

from engine.report import ITERATION_KEYS

_MARKER = re.compile(r"__(TITLE|CSS|STATIC|DATA|JS)__")


def _asset(name: str) -> str:
    return resources.files("engine.review").joinpath(name).read_text(encoding="utf-8")


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.2f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {fmt(n)}" for k, n in v.items()) or "–"
    return str(v)


def table_html(rows: list[dict[str, Any]], keys: list[str], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(r.get(k)))}</td>" for k in keys) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _gain(g: dict[str, Any] | None) -> str:
    if not g or g.get("gain_db") is None:
        return "n/a"
    ci = g.get("ci95_db")
    return f"{g['gain_db']:+.2f} dB" + (f" (95 % CI [{ci[0]:+.2f}, {ci[1]:+.2f}], n = {g['n']})" if ci else "")


def static_html(name: str, config_hash: str, report: dict[str, Any] | None, iteration_rows: list[dict[str, Any]],
                plots: dict[str, str]) -> str:
    """Header, headline, iteration table and plots (`plots`: title -> path relative to the page)."""
    parts = [f"<header><h1>stemforge run <code>{html.escape(name)}</code></h1>"
             f"<p>config hash <code>{html.escape(config_hash)}</code>"
             + (f", total {report['total_seconds']:.0f} s" if report and report.get("total_seconds") is not None else "")
             + "</p></header>"]
    h = (report or {}).get("headline")
    if h:
        stopped = (h.get("stopped") or {}).get("reason", "n/a")
        parts.append('<section id="headline"><h2>Headline</h2><ul>'
                     f"<li>gain over the compute-matched control: <b>{html.escape(_gain(h.get('gain_vs_control')))}</b></li>"
                     f"<li>gain over iteration 0: {html.escape(_gain(h.get('gain_vs_iteration0')))}</li>"
                     f"<li>the cycle stopped: {html.escape(str(stopped))}</li></ul></section>")
    keys = ["iteration", "separator_hash", *[k for k in ITERATION_KEYS if k not in ("iteration", "separator_checkpoint")]]
    keys = [k for k in keys if any(k in r for r in iteration_rows)]
    parts.append('<section id="iterations"><h2>Iterations (0 = bootstrap)</h2>'
                 + '<div class="scroll-x">' + table_html(iteration_rows, keys, "iterations") + "</div></section>")
    if plots:
        figs = "".join(f'<figure><img src="{html.escape(p)}" alt="{html.escape(t)}"><figcaption>{html.escape(t)}</figcaption></figure>'
                       for t, p in plots.items())
        parts.append(f'<section id="plots"><h2>Plots</h2><div class="plots">{figs}</div></section>')
    return "\n".join(parts)


def finite(data: Any) -> Any:
    """NaN and infinities (which markers may hold) as null: JSON.parse rejects them."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data


def embed_json(data: Any) -> str:
    """JSON safe inside <script>: `<` escaped, so no `</script>` or comment opener can end the element early."""
    return json.dumps(finite(data), separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def render(title: str, static: str, data: Any) -> str:
    parts = {"TITLE": html.escape(title), "CSS": _asset("page.css"), "STATIC": static, "DATA": embed_json(data),
             "JS": _asset("page.js")}
    return _MARKER.sub(lambda m: parts[m.group(1)], _asset("page.html"))
