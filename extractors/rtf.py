"""RTF through ``striprtf``.

The file is read as Latin-1 (RTF is 7-bit; 8-bit text is escaped as ``\\'hh`` in the
document's code page, ``\\ansicpgN``, which is handed to ``striprtf`` as the default
encoding; fonts with their own ``\\fcharset`` are decoded by ``striprtf`` in their code
page, ``\\uN`` escapes are Unicode). Unpaired surrogates from broken ``\\u`` escapes
become U+FFFD, byte-order marks are dropped.

Each RTF paragraph (``\\par``: one line of ``striprtf``'s output) is one element:
lines that start with a bullet or a number followed by a tab ("·\\t", "1)\\t") are
``list_item``; runs of table rows (``striprtf`` ends each cell with "|") become one
``table`` element, cells rendered like the other formats' tables; everything else is
a ``paragraph``. RTF keeps no reliable heading structure in its text, so there are no
headings. Embedded objects and pictures are skipped.
"""
from __future__ import annotations

import re
from pathlib import Path

from ._tables import render_table
from .base import Element, ExtractContext, Extraction, ExtractionError
from .errors import ErrorCode

OUR_VERSION = 1
_ANSICPG = re.compile(rb"\\ansicpg(\d+)")
_LIST = re.compile(r"^(?:[\u00b7\u2022\uf0b7\uf0a7\uf0d8\uf0fc\-*o§]|\(?\w{1,3}[.)])\t")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _code_page(head: bytes) -> str:
    match = _ANSICPG.search(head)
    if match:
        name = f"cp{int(match.group(1))}"
        try:
            "".encode(name)
            return name
        except LookupError:
            pass
    return "cp1252"


def rtf_text(data: bytes) -> str:
    from striprtf.striprtf import rtf_to_text

    encoding = _code_page(data[:4096])
    text = rtf_to_text(data.decode("latin-1"), encoding=encoding, errors="replace")
    text = _SURROGATE.sub("\ufffd", text).replace("\ufeff", "").replace("\u00ad", "")
    return text


def _elements(text: str) -> list[Element]:
    out: list[Element] = []
    rows: list[list[str]] = []

    def flush_table():
        if rows:
            width = max(len(r) for r in rows)
            cells = [r + [""] * (width - len(r)) for r in rows]
            out.append(Element("table", render_table(cells), meta={"cells": cells}))
            rows.clear()

    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.strip(" \u00a0")
        if line.endswith("|") and line.count("|") >= 1 and "\t" not in line.rstrip("|"):
            cells = [" ".join(c.split()) for c in line.rstrip("|").split("|")]
            if any(cells):
                rows.append(cells)
                continue
        flush_table()
        if not line.strip():
            continue
        if _LIST.match(line):
            item = line.split("\t", 1)[1].strip()
            if item:
                out.append(Element("list_item", " ".join(item.split())))
            continue
        out.append(Element("paragraph", " ".join(line.split())))
    flush_table()
    return out


def extract(path: Path, mime: str, ctx: ExtractContext) -> Extraction:
    """Router entry point (see ``extractors.registry.EXTRACTORS``)."""
    from importlib.metadata import PackageNotFoundError, version

    data = path.read_bytes()
    if not data.lstrip()[:5] == b"{\\rtf":
        raise ExtractionError(ErrorCode.CORRUPT, "rtf: no {\\rtf header")
    elements = _elements(rtf_text(data))
    try:
        lib = version("striprtf")
    except PackageNotFoundError:
        lib = "unknown"
    return Extraction(
        elements=elements,
        extractor="rtf/striprtf",
        extractor_version=f"striprtf-{lib}+{OUR_VERSION}",
        mime=mime,
        warnings=[] if elements else ["no text"],
    )
