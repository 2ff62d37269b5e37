"""report.md: a GitHub job summary — headline recommendation, one table per concern, chart links.

Must not compute anything: it formats `Table`s and the recommendation it is given.
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.report.tables import Table

__all__ = ["md_table", "render_markdown"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(
    *,
    title: str,
    recommendation: str,
    facts: list[str],
    tables: list[Table],
    charts: list[tuple[str, str]],
    card: Table | None = None,
    warnings: Sequence[str] = (),
) -> str:
    """warnings: the top lines (measurement health); facts: one-line run facts (dataset, calls,
    window); charts: (file name, title); card: the methodology."""
    out = [f"# {title}", ""]
    for w in warnings:
        out += [f"> **Warning:** {w}", ""]
    if card is not None:
        out += [f"## {card.title}", "", md_table(card.header, card.rows), ""]
    out += [f"**{recommendation}**", ""]
    out += [f"- {f}" for f in facts]
    for t in tables:
        out += ["", f"## {t.title}", ""]
        out.append(md_table(t.header, t.rows) if t.rows else "_no rows_")
        if t.note:
            out += ["", f"_{t.note}_"]
    if charts:
        out += ["", "## Charts", ""]
        out += [f"- [{name}]({file})" for file, name in charts]
        out += ["", "The full report with the charts embedded is `report.html`, beside this file."]
    return "\n".join(out) + "\n"
