"""Markdown, HTML and PPTX through ``unstructured`` (CSV, XLSX, plain text and EML too,
for callers that ask; the router sends those to ``spreadsheet``, ``text`` and
``email_family``: CSV and XLSX are streamed there since issue 3, and the partitioners
here remain the reference the streaming extractor's tests compare against).

Each format uses its own partitioner (``unstructured.partition.md.partition_md`` and
so on), never ``partition.auto``, so only the machinery that format needs is
imported. ``spacy_shim.install()`` runs first: it turns off unstructured's telemetry
and stops it from downloading a spaCy model (see that module).

Category mapping (unstructured -> ``Element.kind``):

=====================================  ==========================================
Title                                  "heading", level = category_depth + 1
                                       (unstructured counts depth from 0), else 1
NarrativeText, Text, UncategorizedText "paragraph"
ListItem                               "list_item" (meta["depth"] when known)
Table                                  "table" (see below)
Header / Footer                        "header" / "footer"
CodeSnippet                            "code"
PageBreak, empty text                  dropped
anything else (Address, EmailAddress,  "text", meta["category"] = the category
FigureCaption, Image alt text, ...)
=====================================  ==========================================

Tables: unstructured's ``text`` of a table is its cells run together with spaces,
which loses the structure; when ``metadata.text_as_html`` is present the table is
rendered like DOCX tables (rows as lines, cells joined by " | ", a "---" line after
the first row) and the cells go to ``meta["cells"]``. XLSX tables start with
``Sheet: <name> — <header row>`` on their first line (the chunker repeats that line
in every part of a split table) and carry ``meta["sheet"]``.

Pages: ``metadata.page_number`` (slide number for PPTX, sheet index for XLSX).
PPTX speaker notes follow their slide's content as ``kind="paragraph"`` with
``meta["notes"] = True``.

Email: the subject becomes a leading ``kind="title"`` element with the sender,
recipients and date in its meta; the body comes from ``partition_email`` with
``process_attachments=False``. Attachments are not extracted here; their names are
listed in a warning so the pipeline can handle them as documents of their own.

Encodings: UTF-16/32 email and CSV files (with a BOM) are re-encoded to UTF-8 before
partitioning, because those two partitioners mangle them; a CSV that is not UTF-8
is read in the code page unstructured's detector guesses, with a warning saying so.
A CSV that ``partition_csv`` (pandas) refuses, e.g. rows of different lengths, is read
with the ``csv`` module instead (``extractor="csv/text"``, with a warning).
"""
from __future__ import annotations

import importlib
import io
from html.parser import HTMLParser
from pathlib import Path

from . import spacy_shim
from ._tables import CONTEXT_SEPARATOR, render_table
from .base import ExtractContext, Element, Extraction, ExtractionError
from .registry import FAMILY
from .text import charset_normalizer_version, decode_bytes, split_table
from .errors import ErrorCode

OUR_VERSION = 1

# format -> (module, function, keyword arguments)
# languages=["eng"] for md/html/txt: skips unstructured's per-document langdetect run
# (~10% of their extraction time); we do not use its language metadata.
PARTITIONERS: dict[str, tuple[str, str, dict]] = {
    "md": ("unstructured.partition.md", "partition_md", {"languages": ["eng"]}),
    "html": ("unstructured.partition.html", "partition_html", {"languages": ["eng"]}),
    "txt": ("unstructured.partition.text", "partition_text", {"languages": ["eng"]}),
    "csv": ("unstructured.partition.csv", "partition_csv", {"infer_table_structure": True}),
    "eml": ("unstructured.partition.email", "partition_email", {"process_attachments": False}),
    "pptx": (
        "unstructured.partition.pptx",
        "partition_pptx",
        {
            "include_page_breaks": False,
            "include_slide_notes": False,  # added after each slide, see _add_slide_notes
            "infer_table_structure": True,
            "strategy": "fast",  # never OCR pictures
        },
    ),
    "xlsx": (
        "unstructured.partition.xlsx",
        "partition_xlsx",
        {"infer_table_structure": True},
    ),
}

_PARAGRAPH_CATEGORIES = {"NarrativeText", "Text", "UncategorizedText"}


def extract_unstructured(path: Path, fmt: str, mime: str) -> Extraction:
    """Partition ``path`` as format ``fmt`` (md, html, txt, csv, eml, pptx, xlsx)."""
    module_name, function_name, kwargs = PARTITIONERS[fmt]

    try:
        spacy_shim.install()
    except RuntimeError as exc:
        raise ExtractionError(ErrorCode.EXTRACTOR_CRASH, f"{fmt}/unstructured: {exc}") from exc

    from unstructured.__version__ import __version__ as unstructured_version

    partition = getattr(importlib.import_module(module_name), function_name)
    warnings: list[str] = []
    # partition_email and partition_csv mishandle UTF-16/32 input (NUL-riddled text;
    # lines split inside a UTF-16 code unit), so such files are handed over re-encoded
    # as UTF-8.
    wide = _utf8_if_wide(path) if fmt in ("eml", "csv") else None
    if wide is not None:
        extra = {"encoding": "utf-8"} if fmt == "csv" else {}
        raw = partition(file=io.BytesIO(wide), metadata_filename=str(path), **extra, **kwargs)
    elif fmt == "csv":
        # partition_csv assumes UTF-8 unless told; exports are often in a code page.
        encoding = _csv_legacy_encoding(path)
        if encoding:
            warnings.append(f"not UTF-8; encoding guessed as {encoding}")
        try:
            raw = partition(filename=str(path), encoding=encoding, **kwargs)
        except Exception as exc:  # noqa: BLE001 - pandas refuses ragged rows; csv does not
            return _lenient_csv(path, mime, exc)
    else:
        raw = partition(filename=str(path), **kwargs)

    elements = [e for e in (to_element(r, fmt) for r in raw) if e is not None]
    if fmt == "eml":
        elements = _email_title(path, wide, raw, warnings) + elements
    pages = None
    if fmt == "pptx":
        elements, pages = _add_slide_notes(path, elements)
    elif fmt == "xlsx":  # the last sheet with content; unstructured skips empty sheets
        pages = max((e.page for e in elements if e.page is not None), default=0)
    return Extraction.of(elements, f"{fmt}/unstructured", f"unstructured-{unstructured_version}+{OUR_VERSION}",
                         mime, warnings, pages)


def _lenient_csv(path: Path, mime: str, exc: Exception) -> Extraction:
    """A CSV that pandas refuses (rows of different lengths, stray quotes): read with
    the ``csv`` module, delimiter sniffed, rows padded to the widest."""
    import csv

    text, _, warnings = decode_bytes(path.read_bytes())
    try:
        delimiter = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ","
    try:
        cells = split_table(text, delimiter)
    except csv.Error as err:
        raise ExtractionError(ErrorCode.CORRUPT, f"csv: {err} (and {type(exc).__name__}: {exc})") from err
    warnings.append(f"read leniently after {type(exc).__name__}: {str(exc)[:200]}")
    elements = [Element("table", render_table(cells), meta={"cells": cells})] if cells else []
    return Extraction.of(elements, "csv/text", f"charset-normalizer-{charset_normalizer_version()}+{OUR_VERSION}",
                         mime, warnings)


def to_element(raw, fmt: str) -> Element | None:
    category = getattr(raw, "category", None) or type(raw).__name__
    text = (getattr(raw, "text", None) or "").strip()
    if category == "PageBreak" or not text:
        return None
    md = raw.metadata
    page = getattr(md, "page_number", None)
    depth = getattr(md, "category_depth", None)
    meta: dict = {}
    level = None
    if category == "Title":
        kind = "heading"
        level = depth + 1 if isinstance(depth, int) and depth >= 0 else 1
    elif category in _PARAGRAPH_CATEGORIES:
        kind = "paragraph"
    elif category == "ListItem":
        kind = "list_item"
        if isinstance(depth, int):
            meta["depth"] = depth
    elif category == "Table":
        kind = "table"
        cells = table_cells_from_html(getattr(md, "text_as_html", None) or "")
        if cells:
            meta["cells"] = cells
            text = render_table(cells)
    elif category == "Header":
        kind = "header"
    elif category == "Footer":
        kind = "footer"
    elif category == "CodeSnippet":
        kind = "code"
    else:
        kind = "text"
        meta["category"] = category
    sheet = getattr(md, "page_name", None) if fmt == "xlsx" else None
    if sheet:
        meta["sheet"] = sheet
        if kind == "table":
            # Sheet name on the header line: the chunker repeats a table's first line
            # in every part it splits off, so each chunk keeps sheet and column names.
            if meta.get("cells"):
                text = render_table(meta["cells"], context=f"Sheet: {sheet}")
            else:
                text = f"Sheet: {sheet}{CONTEXT_SEPARATOR}{text}"
    return Element(kind=kind, text=text, page=page, level=level, meta=meta)


# --------------------------------------------------------------------------- slides


def _add_slide_notes(path: Path, elements: list[Element]) -> tuple[list[Element], int]:
    """Speaker notes as a paragraph after each slide's content, ``meta["notes"]=True``;
    also returns the number of slides.

    unstructured's own ``include_slide_notes`` emits the notes *before* the slide's
    title, unmarked; python-pptx is already loaded by then, so read them here.
    """
    from pptx import Presentation

    notes: dict[int, str] = {}
    slides = Presentation(str(path)).slides
    for number, slide in enumerate(slides, start=1):
        if not slide.has_notes_slide:
            continue
        frame = slide.notes_slide.notes_text_frame
        text = frame.text.strip() if frame is not None else ""
        if text:
            notes[number] = text
    if not notes:
        return elements, len(slides)
    out: list[Element] = []
    pending = sorted(notes)
    for element in elements:
        while pending and element.page is not None and element.page > pending[0]:
            page = pending.pop(0)
            out.append(Element(kind="paragraph", text=notes[page], page=page, meta={"notes": True}))
        out.append(element)
    for page in pending:
        out.append(Element(kind="paragraph", text=notes[page], page=page, meta={"notes": True}))
    return out, len(slides)


# --------------------------------------------------------------------------- tables


class _TableParser(HTMLParser):
    """Collect the cell texts of the first-level rows of ``text_as_html``."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._span = 1

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
            try:
                self._span = max(1, int(dict(attrs).get("colspan") or 1))
            except ValueError:
                self._span = 1
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._row.extend([""] * (self._span - 1))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def table_cells_from_html(html: str) -> list[list[str]]:
    if not html:
        return []
    parser = _TableParser()
    parser.feed(html)
    parser.close()
    return [row for row in parser.rows if any(cell for cell in row)]



# --------------------------------------------------------------------------- email


_UNICODE_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def _utf8_if_wide(path: Path) -> bytes | None:
    """The file as UTF-8 bytes if it is UTF-16/32 with a BOM, else None."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    for bom, codec in _UNICODE_BOMS:
        if head.startswith(bom):
            return path.read_bytes().decode(codec).encode("utf-8")
    return None


def _csv_legacy_encoding(path: Path) -> str | None:
    """None for UTF-8 (the partitioner's default), else the code page that
    unstructured's detector guesses."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
        return None
    except UnicodeDecodeError:
        pass
    import warnings as _warnings

    from unstructured.file_utils.encoding import detect_file_encoding

    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")  # "detection may be ambiguous": we say so
        encoding, _ = detect_file_encoding(file=data)
    return encoding


def _email_title(path: Path, data: bytes | None, raw: list, warnings: list[str]) -> list[Element]:
    """Subject as a title element; attachments named in a warning."""
    import email
    import email.policy

    if data is None:
        data = path.read_bytes()
    message = email.message_from_bytes(data, policy=email.policy.default)

    attachments = []
    for part in message.walk():
        try:
            name = part.get_filename()
            disposition = str(part.get("Content-Disposition") or "").lower()
        except Exception as exc:  # noqa: BLE001 - malformed MIME header; reported below
            attachments.append(f"(unreadable part header: {type(exc).__name__})")
            continue
        if name or disposition.startswith("attachment"):
            attachments.append(str(name) if name else "(unnamed)")
    if attachments:
        warnings.append(
            f"{len(attachments)} attachment(s) not extracted: " + ", ".join(attachments)
        )

    md = raw[0].metadata if raw else None
    headers = _Headers(message, warnings)
    subject = getattr(md, "subject", None) or headers.text("Subject")
    if not subject or not subject.strip():
        return []
    meta = {
        "from": getattr(md, "sent_from", None) or headers.all("From"),
        "to": getattr(md, "sent_to", None) or headers.all("To"),
        "cc": getattr(md, "cc_recipient", None) or headers.all("Cc"),
        "date": headers.text("Date") or None,
        "message_id": getattr(md, "email_message_id", None) or headers.text("Message-ID") or None,
    }
    meta = {k: v for k, v in meta.items() if v}
    return [Element(kind="title", text=" ".join(subject.split()), level=1, meta=meta)]


class _Headers:
    """Decoded header values; a header the parser chokes on falls back to its raw text
    and is named in the warnings."""

    def __init__(self, message, warnings: list[str]):
        self._message = message
        self._warnings = warnings

    def all(self, name: str) -> list[str] | None:
        try:
            values = self._message.get_all(name) or []
            out = [" ".join(str(v).split()) for v in values]
        except Exception as exc:  # noqa: BLE001 - recorded, raw value used instead
            self._warnings.append(f"header {name} undecodable ({type(exc).__name__}); kept raw")
            out = [
                " ".join(str(v).split())
                for k, v in self._message.raw_items()
                if k.lower() == name.lower()
            ]
        return [v for v in out if v] or None

    def text(self, name: str) -> str:
        values = self.all(name)
        return values[0] if values else ""


def extract(path: Path, mime: str, ctx: ExtractContext) -> Extraction:
    """Router entry point (see ``extractors.registry.EXTRACTORS``)."""
    return extract_unstructured(path, FAMILY[mime], mime)
