"""Plain-text rendering of tables, shared by all format families.

Rows become lines, cells are joined by " | ", and a "--- | ---" line follows the
first row (the header), so a table reads like a Markdown table without the outer
pipes. Whitespace inside a cell (including newlines) collapses to single spaces.
"""
from __future__ import annotations


def render_table(cells: list[list[str]]) -> str:
    def line(row: list[str]) -> str:
        return " | ".join(" ".join(cell.split()) for cell in row)

    lines = [line(cells[0])]
    if len(cells) > 1:
        lines.append(" | ".join("---" for _ in cells[0]))
        lines.extend(line(row) for row in cells[1:])
    return "\n".join(lines)
