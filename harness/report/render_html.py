"""report.html: one self-contained file — the same tables plus every chart embedded as base64 PNG.

No external scripts, styles or fonts, so it opens from an artifact offline. Must not
compute anything.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from html import escape

from harness.report.tables import Table

__all__ = ["card_html", "render_html", "table_html"]

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
.rec{background:#eef6ee;border-left:4px solid #3a3;padding:.8em 1em}
.warn{background:#fff4e0;border-left:4px solid #d80;padding:.8em 1em}
.note{color:#555;font-size:.8em;max-width:60em}
table.card td{text-align:left}table.card{background:#f8f8fb}
figure{display:inline-block;margin:.5em 1em .5em 0}figcaption{font-size:.85em;color:#444}
"""


def _md_bold_to_html(text: str) -> str:
    parts = escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def render_html(
    *,
    title: str,
    recommendation: str,
    facts: list[str],
    tables: list[Table],
    charts: list[tuple[str, str, bytes]],
    card: Table | None = None,
    warnings: Sequence[str] = (),
) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        *(f'<p class="warn"><b>Warning:</b> {escape(w)}</p>' for w in warnings),
    ]
    if card is not None:
        out.append(card_html(card))
    out += [
        f'<p class="rec">{escape(recommendation)}</p>',
        "<ul>" + "".join(f"<li>{escape(f)}</li>" for f in facts) + "</ul>",
    ]
    if charts:
        out.append("<h2>Charts</h2>")
        for _file, name, png in charts:
            data = base64.b64encode(png).decode("ascii")
            out.append(
                f'<figure><img alt="{escape(name)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{escape(name)}</figcaption></figure>"
            )
    out += [table_html(t) for t in tables]
    out.append("</body></html>")
    return "\n".join(out)


def table_html(t: Table, css: str = "") -> str:
    """One table with its heading and note."""
    out = [f"<h2>{escape(t.title)}</h2>"]
    if t.rows:
        out.append(
            f"<table{f' class={css!r}' if css else ''}><thead><tr>"
            + "".join(f"<th>{escape(h)}</th>" for h in t.header)
            + "</tr></thead><tbody>"
        )
        for row in t.rows:
            out.append("<tr>" + "".join(f"<td>{_md_bold_to_html(c)}</td>" for c in row) + "</tr>")
        out.append("</tbody></table>")
    else:
        out.append("<p><i>no rows</i></p>")
    if t.note:
        out.append(f'<p class="note">{_md_bold_to_html(t.note)}</p>')
    return "\n".join(out)


def card_html(card: Table) -> str:
    """The methodology card: a left-aligned table at the top of a page."""
    return table_html(card, "card")
