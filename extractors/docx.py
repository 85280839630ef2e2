"""DOCX extraction with python-docx, walking the WordprocessingML directly.

Reading order is the order of the body's XML children, so paragraphs and tables come
out interleaved as in the document. Content controls (``w:sdt``, e.g. a table of
contents) and ``w:customXml`` wrappers are descended into.

* Paragraph style "Title" -> ``kind="title", level=1``; "Heading N" (also a style
  based on one, or an explicit outline level) -> ``kind="heading", level=N``.
* Numbered/bulleted paragraphs (``w:numPr`` on the paragraph or its style, or a
  "List ..." style) -> ``kind="list_item"``, ``meta={"ilvl": n}`` when known.
* A table -> one ``kind="table"`` element: one line per row, cells joined by
  " | ", a "--- | ---" line after the first row (the header); ``meta["cells"]`` holds
  the cell texts as a list of rows. Horizontally merged cells are padded with "" so
  columns line up; nested tables are flattened into their cell's text (cells
  joined by "; ").
* Headers and footers of all sections, deduplicated by text: ``kind="header"``
  first, ``kind="footer"`` last, ``meta={"section": n, "variant": "default" |
  "first" | "even"}``. First-page/even-page variants count only where the document
  turns them on.
* Text of tracked deletions is left out; tracked insertions, hyperlinks, fields'
  results and text boxes (once, not their VML fallback copy) are kept.

Not extracted (yet): footnotes, endnotes, comments, embedded objects.
"""
from __future__ import annotations

import re
from pathlib import Path

from ._tables import render_table
from .base import ExtractContext, Element, Extraction, ExtractionError
from .errors import ErrorCode

EXTRACTOR = "docx/python-docx"
OUR_VERSION = 1
MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_MC = "http://schemas.openxmlformats.org/markup-compatibility/2006"


def _w(tag: str) -> str:
    return f"{{{_W}}}{tag}"


W_P, W_TBL, W_TR, W_TC = _w("p"), _w("tbl"), _w("tr"), _w("tc")
W_T, W_TAB, W_BR, W_CR = _w("t"), _w("tab"), _w("br"), _w("cr")
W_SDT, W_SDT_CONTENT, W_CUSTOM_XML = _w("sdt"), _w("sdtContent"), _w("customXml")
W_PPR, W_TCPR, W_GRIDSPAN, W_VAL = _w("pPr"), _w("tcPr"), _w("gridSpan"), _w("val")
W_NUMPR, W_ILVL, W_OUTLINE, W_PSTYLE = _w("numPr"), _w("ilvl"), _w("outlineLvl"), _w("pStyle")
W_NOBREAK_HYPHEN = _w("noBreakHyphen")
# Subtrees whose text is not part of the visible document (or is a duplicate).
_SKIP = {_w("del"), _w("moveFrom"), W_PPR, _w("rPr"), f"{{{_MC}}}Fallback"}

_HEADING_NAME = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)


# Main-part content types of .docm/.dotx/.dotm: the same WordprocessingML as .docx,
# which python-docx's ``Document()`` refuses only by content type.
_WORD_VARIANT_CONTENT_TYPES = (
    "application/vnd.ms-word.document.macroEnabled.main+xml",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml",
    "application/vnd.ms-word.template.macroEnabledTemplate.main+xml",
)


def _open_document(path: Path):
    """Like ``docx.Document(path)``, but also for macro-enabled and template files."""
    from docx.opc.constants import CONTENT_TYPE as CT
    from docx.opc.part import PartFactory
    from docx.package import Package
    from docx.parts.document import DocumentPart

    for content_type in _WORD_VARIANT_CONTENT_TYPES:
        PartFactory.part_type_for.setdefault(content_type, DocumentPart)
    part = Package.open(str(path)).main_document_part
    if not isinstance(part, DocumentPart):
        raise ExtractionError(
            ErrorCode.CORRUPT,
            f"docx: main part has content type {part.content_type!r}, "
            f"expected {CT.WML_DOCUMENT_MAIN!r}",
        )
    return part.document


def extract_docx(path: Path, mime: str = MIME) -> Extraction:
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    lib_version = getattr(docx, "__version__", "unknown")

    try:
        document = _open_document(path)
    except (PackageNotFoundError, KeyError) as exc:  # KeyError: a part the package names is missing
        why = "missing package part" if isinstance(exc, KeyError) else \
            "not a readable ZIP/Word package (truncated or damaged):"
        raise ExtractionError(ErrorCode.CORRUPT, f"docx: {why} {exc}") from exc

    styles = _StyleIndex(document)
    warnings: list[str] = []
    body_elements = list(_walk_blocks(document.element.body, styles))
    headers, footers = _headers_and_footers(document, styles, warnings)
    elements = headers + body_elements + footers
    return Extraction.of(elements, EXTRACTOR, f"python-docx-{lib_version}+{OUR_VERSION}", mime, warnings)


# --------------------------------------------------------------------------- styles


class _StyleIndex:
    """style id -> (kind, level) and list-ness, following ``w:basedOn`` chains."""

    def __init__(self, document):
        self._by_id = {}
        for style in document.styles:
            style_id = getattr(style, "style_id", None)
            if style_id:
                self._by_id[style_id] = style
        self._cache: dict[str | None, tuple[str, int | None, bool]] = {}

    def classify(self, style_id: str | None) -> tuple[str, int | None, bool]:
        """Return (kind, level, is_list) for a paragraph style id."""
        if style_id in self._cache:
            return self._cache[style_id]
        result = ("paragraph", None, False)
        style = self._by_id.get(style_id) if style_id else None
        seen = set()
        is_list = False
        while style is not None and id(style) not in seen:
            seen.add(id(style))
            name = (style.name or "").strip()
            lowered = name.lower()
            if lowered.startswith("list"):
                is_list = True
            ppr = style.element.find(W_PPR)
            if ppr is not None and ppr.find(W_NUMPR) is not None:
                is_list = True
            if lowered == "title":
                result = ("title", 1, False)
                break
            match = _HEADING_NAME.match(lowered)
            if match:
                result = ("heading", int(match.group(1)), False)
                break
            outline = _outline_level(ppr)
            if outline is not None:
                result = ("heading", outline, False)
                break
            style = getattr(style, "base_style", None)
        if result[0] == "paragraph" and is_list:
            result = ("list_item", None, True)
        self._cache[style_id] = result
        return result


def _outline_level(ppr) -> int | None:
    """1-based heading level from ``w:outlineLvl`` (0..8; 9 means body text)."""
    if ppr is None:
        return None
    lvl = ppr.find(W_OUTLINE)
    if lvl is None:
        return None
    try:
        value = int(lvl.get(W_VAL))
    except (TypeError, ValueError):
        return None
    return value + 1 if 0 <= value <= 8 else None


# --------------------------------------------------------------------------- blocks


def _iter_block_children(container):
    """Yield ``w:p``/``w:tbl`` children of a block container, through sdt/customXml."""
    for child in container:
        tag = child.tag
        if tag in (W_P, W_TBL):
            yield child
        elif tag == W_SDT:
            content = child.find(W_SDT_CONTENT)
            if content is not None:
                yield from _iter_block_children(content)
        elif tag == W_CUSTOM_XML:
            yield from _iter_block_children(child)


def _walk_blocks(container, styles: _StyleIndex):
    for block in _iter_block_children(container):
        if block.tag == W_P:
            element = _paragraph_element(block, styles)
            if element is not None:
                yield element
        else:
            element = _table_element(block)
            if element is not None:
                yield element


def _paragraph_element(p, styles: _StyleIndex) -> Element | None:
    text = paragraph_text(p).strip()
    if not text:
        return None
    ppr = p.find(W_PPR)
    style_id = None
    if ppr is not None:
        pstyle = ppr.find(W_PSTYLE)
        if pstyle is not None:
            style_id = pstyle.get(W_VAL)
    kind, level, _ = styles.classify(style_id)
    meta: dict = {}
    if kind == "paragraph":
        outline = _outline_level(ppr)
        if outline is not None:
            kind, level = "heading", outline
    numpr = ppr.find(W_NUMPR) if ppr is not None else None
    if numpr is not None and kind == "paragraph":
        kind = "list_item"
    if kind == "list_item":
        ilvl = numpr.find(W_ILVL) if numpr is not None else None
        if ilvl is not None and (ilvl.get(W_VAL) or "").isdigit():
            meta["ilvl"] = int(ilvl.get(W_VAL))
    if style_id:
        meta["style"] = style_id
    return Element(kind=kind, text=text, level=level, meta=meta)


def paragraph_text(p) -> str:
    """Visible text of a ``w:p``: runs, hyperlinks, insertions, fields, text boxes."""
    parts: list[str] = []

    def walk(el):
        for child in el:
            tag = child.tag
            if not isinstance(tag, str) or tag in _SKIP:
                continue
            if tag == W_T:
                parts.append(child.text or "")
            elif tag == W_TAB:
                parts.append("\t")
            elif tag in (W_BR, W_CR):
                parts.append("\n")
            elif tag == W_NOBREAK_HYPHEN:
                parts.append("-")
            elif tag == W_P:  # a paragraph inside a text box
                parts.append("\n")
                walk(child)
            else:
                walk(child)

    walk(p)
    return "".join(parts)


# --------------------------------------------------------------------------- tables


def _children(parent, tag):
    """``parent``'s children with ``tag``, looking through content controls and custom XML."""
    for child in parent:
        if child.tag == tag:
            yield child
        elif child.tag in (W_SDT, W_CUSTOM_XML):
            inner = child.find(W_SDT_CONTENT) if child.tag == W_SDT else child
            if inner is not None:
                yield from _children(inner, tag)


def _rows(tbl):
    return _children(tbl, W_TR)


def _cells(tr):
    return _children(tr, W_TC)


def _grid_span(tc) -> int:
    tcpr = tc.find(W_TCPR)
    span = tcpr.find(W_GRIDSPAN) if tcpr is not None else None
    try:
        return max(1, int(span.get(W_VAL))) if span is not None else 1
    except (TypeError, ValueError):
        return 1


def _cell_text(tc) -> str:
    lines: list[str] = []
    for block in _iter_block_children(tc):
        if block.tag == W_P:
            text = paragraph_text(block).strip()
            if text:
                lines.append(text)
        else:
            nested = table_cells(block)
            # Nested cells use "; " so they cannot be mistaken for the outer columns.
            lines.extend("; ".join(c for c in row if c) for row in nested if any(row))
    return "\n".join(lines)


def table_cells(tbl) -> list[list[str]]:
    """Cell texts of a ``w:tbl`` as rows; a cell spanning n grid columns is padded."""
    rows: list[list[str]] = []
    for tr in _rows(tbl):
        row: list[str] = []
        for tc in _cells(tr):
            row.append(_cell_text(tc))
            row.extend([""] * (_grid_span(tc) - 1))
        rows.append(row)
    return rows


def _table_element(tbl) -> Element | None:
    cells = table_cells(tbl)
    cells = [row for row in cells if any(c.strip() for c in row)]
    if not cells:
        return None
    return Element(kind="table", text=render_table(cells), meta={"cells": cells})


# ------------------------------------------------------------------ headers/footers


def _headers_and_footers(document, styles: _StyleIndex, warnings: list[str]):
    try:
        even_enabled = bool(document.settings.odd_and_even_pages_header_footer)
    except Exception as exc:  # noqa: BLE001 - settings part damaged; assume off, say so
        warnings.append(f"settings unreadable, even-page headers ignored: {exc}")
        even_enabled = False
    headers: list[Element] = []
    footers: list[Element] = []
    seen: set[tuple[str, str]] = set()
    for number, section in enumerate(document.sections, start=1):
        variants = [("default", "header", "footer")]
        if section.different_first_page_header_footer:
            variants.append(("first", "first_page_header", "first_page_footer"))
        if even_enabled:
            variants.append(("even", "even_page_header", "even_page_footer"))
        for variant, header_attr, footer_attr in variants:
            pairs = (("header", header_attr, headers), ("footer", footer_attr, footers))
            for kind, attr, out in pairs:
                part = getattr(section, attr)
                if part.is_linked_to_previous:  # inherited (already seen) or absent
                    continue
                root = part._definition.element
                text = "\n".join(e.text for e in _walk_blocks(root, styles)).strip()
                if not text or (kind, text) in seen:
                    continue
                seen.add((kind, text))
                out.append(
                    Element(kind=kind, text=text, meta={"section": number, "variant": variant})
                )
    return headers, footers


def extract(path: Path, mime: str, ctx: ExtractContext) -> Extraction:
    """Router entry point (see ``extractors.registry.EXTRACTORS``)."""
    return extract_docx(path, mime)
