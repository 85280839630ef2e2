"""Plain-text rendering of tables, shared by all format families.

Rows become lines, cells are joined by " | ", and a "--- | ---" line follows the
first row (the header), so a table reads like a Markdown table without the outer
pipes. Whitespace inside a cell (including newlines) collapses to single spaces.

``context`` (e.g. "Sheet: Budget") is put on the header line itself, before the cells
and separated by " — ": the chunker repeats the *first line* of a table in every part
of a table it splits, so the sheet name and the column names both travel with every
chunk of a long sheet.
"""
from __future__ import annotations

CONTEXT_SEPARATOR = " \u2014 "


def render_table(cells: list[list[str]], context: str | None = None) -> str:
    def line(row: list[str]) -> str:
        return " | ".join(" ".join(cell.split()) for cell in row)

    first = line(cells[0])
    if context:
        first = f"{context}{CONTEXT_SEPARATOR}{first}" if first else context
    lines = [first]
    if len(cells) > 1:
        lines.append(" | ".join("---" for _ in cells[0]))
        lines.extend(line(row) for row in cells[1:])
    return "\n".join(lines)
