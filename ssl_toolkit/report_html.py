"""HTML pieces of the report: one self-contained page (inline CSS, figures as base64 PNG), no scripts.

Every string from a run folder is escaped; the page loads nothing from the network.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from ssl_toolkit.report_verdict import Verdict

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1160px;margin:1.5em auto;
 padding:0 1em;color:#1f2328;line-height:1.45}
h1{margin:0 0 .1em;font-size:1.7em}
h2{margin:1.6em 0 .5em;font-size:1.25em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
.sub{color:#59636e;margin:0 0 1em}
img{max-width:100%}
.facts{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:.35em 1.5em;margin:.8em 0;
 padding:.8em 1em;background:#f6f8fa;border-radius:8px}
.facts div{font-size:.92em}
.facts b{display:block;color:#59636e;font-weight:600;font-size:.78em;text-transform:uppercase;letter-spacing:.03em}
.cards{display:flex;flex-wrap:wrap;gap:.8em;margin:.6em 0 1em}
.card{flex:1 1 200px;border-radius:8px;padding:.7em 1em;border:1px solid}
.card .v{font-size:1.7em;font-weight:650}
.card .t{font-size:.85em}
.card .w{font-size:.8em;margin-top:.2em}
table{border-collapse:collapse;font-size:.9em;margin:.4em 0}
th,td{padding:.35em .8em;text-align:right;border-bottom:1px solid #d0d7de}
th:first-child,td:first-child,.l{text-align:left}
th{background:#f6f8fa;white-space:nowrap}
.pill{display:inline-block;border-radius:1em;padding:.1em .7em;font-size:.85em}
.good{background:#dafbe1;color:#116329;border-color:#4ac26b}
.warn{background:#fff8c5;color:#7d4e00;border-color:#d4a72c}
.bad{background:#ffebe9;color:#a40e26;border-color:#ff818e}
.info{background:#eaeef2;color:#424a53;border-color:#afb8c1}
.note{padding:.55em .9em;border-radius:6px;margin:.5em 0;border:1px solid}
.unavailable{color:#59636e;font-style:italic}
details{margin:.6em 0}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;font-size:.85em}
.defs{font-size:.85em;color:#424a53}
.defs li{margin:.15em 0}
"""


def esc(text: object) -> str:
    return html.escape(str(text))


def image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{esc(path.name)}" src="data:image/png;base64,{data}">'


def unavailable(reason: str) -> str:
    return f'<p class="unavailable">unavailable: {esc(reason)}</p>'


def note(text: str, level: str = "info") -> str:
    return f'<div class="note {level}">{esc(text)}</div>'


def facts(pairs: Sequence[tuple[str, str]]) -> str:
    cells = "".join(f"<div><b>{esc(label)}</b>{esc(value)}</div>" for label, value in pairs)
    return f'<div class="facts">{cells}</div>'


def cards(rows: Sequence[Verdict], width: int | None = None) -> str:
    """Big numbers, one card per metric, coloured by its verdict."""
    out = []
    for row in rows:
        value = row.formatted(row.encoder)
        if row.key == "rankme" and width:
            value += f" / {width}"
        out.append(
            f'<div class="card {row.colour}"><div class="t">{esc(row.short_title)}</div>'
            f'<div class="v">{esc(value)}</div><div class="w">{esc(row.words)}</div></div>'
        )
    return f'<div class="cards">{"".join(out)}</div>'


def verdict_table(rows: Sequence[Verdict], definitions: dict[str, str]) -> str:
    """Metric | encoder | raw pixels | random init | verdict; definitions as hover text on the metric."""
    floors = [name for name in ("raw_pixels", "random_init") if any(name in row.floors for row in rows)]
    head = "".join(f"<th>{esc(name.replace('_', ' '))}</th>" for name in floors)
    body = []
    for row in rows:
        tip = definitions.get(row.key)
        title = f'<span title="{esc(tip)}">{esc(row.title)}</span>' if tip else esc(row.title)
        cells = "".join(f"<td>{esc(row.formatted(row.floors.get(name)))}</td>" for name in floors)
        body.append(
            f"<tr><td>{title}</td><td><b>{esc(row.formatted(row.encoder))}</b></td>{cells}"
            f'<td class="l"><span class="pill {row.colour}">{esc(row.words)}</span></td></tr>'
        )
    head = f"<tr><th>metric</th><th>encoder</th>{head}<th class='l'>verdict</th></tr>"
    return f"<table>{head}{''.join(body)}</table>"


def values_table(columns: dict[str, list[float]]) -> str:
    """The rows of a metrics CSV as an HTML table (for runs with too few rows to plot)."""
    names = list(columns)
    n = len(columns[names[0]]) if names else 0
    head = "".join(f"<th>{esc(name)}</th>" for name in names)
    rows = "".join(
        "<tr>" + "".join(f"<td>{_cell(name, columns[name][i])}</td>" for name in names) + "</tr>" for i in range(n)
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


def _cell(name: str, value: float) -> str:
    if value != value:  # NaN
        return "-"
    if name in ("step", "epoch") or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.4g}"


def definitions_list(definitions: dict[str, str]) -> str:
    items = "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in definitions.items())
    return f'<details><summary>definitions</summary><ul class="defs">{items}</ul></details>' if items else ""


def page(title: str, subtitle: str, header: str, sections: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<h2>{esc(name)}</h2>{content}" for name, content in sections)
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)} report</title>"
        f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1><p class='sub'>{esc(subtitle)}</p>{header}{body}"
        "</body></html>"
    )
