"""OpenDocument text, spreadsheet and presentation (ODT/ODS/ODP, their templates, and
the OpenOffice.org 1.x SXW/SXC/SXI they grew from), read from ``content.xml`` (and
``styles.xml`` for page headers and footers) with lxml.

The XML is parsed without entity resolution, DTD loading or network access, and with
libxml2's default size and depth bounds. Elements are matched by namespace *and* local
name; the OpenOffice.org 1.x namespaces map onto the ODF ones, so both read alike.

Text documents (ODT), in document order:

* ``text:h`` -> ``heading`` with ``level`` = ``text:outline-level`` (1 if absent);
* ``text:p`` -> ``paragraph``; text boxes anchored in a paragraph follow it;
* ``text:list`` -> one ``list_item`` per item paragraph, ``meta["depth"]`` = nesting (0 = top);
* ``table:table`` -> ``table`` (rows as lines, cells joined by " | ", header = first row);
* footnotes / endnotes -> a ``paragraph`` after the one citing them, ``meta["note"]``;
* page headers / footers of the master pages (``styles.xml``) -> ``header`` first /
  ``footer`` last, each distinct text once;
* tables of contents and other generated indexes, tracked deletions, comments and
  forms are skipped (they repeat or are not the document's text).

Spreadsheets (ODS; the router sends them to ``extractors.spreadsheet``, which streams
content.xml row by row with ``row_cells`` below; this whole-tree path remains for direct
callers): each sheet is one ``table`` element, ``page`` = sheet number,
``meta["sheet"]`` = its name, whose first line is "Sheet: <name> — <header row>"
(the chunker repeats a table's first line in every part, so every chunk of a sheet
carries the sheet name and the header). Empty rows and columns are dropped;
``number-rows-repeated`` / ``number-columns-repeated`` are expanded only for cells
with content (at most ``MAX_REPEAT`` times), so a styled million-row sheet costs
nothing. A cell's text is its paragraphs (what the user sees), else its
``office:value``.

Presentations (ODP): each ``draw:page`` is a page (1-based slide number); the title
placeholder is a ``heading`` of level 1, other text frames give paragraphs / lists /
tables, speaker notes follow the slide's content as a ``paragraph`` with
``meta["notes"] = True``.

Encrypted documents (an ``encryption-data`` entry for ``content.xml`` in the
manifest): decrypted with the passwords configured for the path (ODF 1.2: PBKDF2 +
AES-256-CBC, needs ``cryptography``); none configured -> ``encrypted: password
required``; none fits -> ``encrypted: configured password did not open it``.

Bounds: a member over ``ctx.limits.max_member_bytes`` uncompressed, or over 10 MiB
with a compression ratio above ``ctx.limits.max_ratio``, is a ``zip-bomb``.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

from ._tables import render_table
from .base import Element, ExtractContext, Extraction, ExtractionError
from .registry import FAMILY
from .errors import ErrorCode

OUR_VERSION = 1
MAX_REPEAT = 1000  # most copies of one repeated row / cell with content
MAX_COLUMNS = 2000  # widest sheet row kept

_NS = {
    "urn:oasis:names:tc:opendocument:xmlns:office:1.0": "office",
    "urn:oasis:names:tc:opendocument:xmlns:text:1.0": "text",
    "urn:oasis:names:tc:opendocument:xmlns:table:1.0": "table",
    "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0": "draw",
    "urn:oasis:names:tc:opendocument:xmlns:presentation:1.0": "presentation",
    "urn:oasis:names:tc:opendocument:xmlns:style:1.0": "style",
    "urn:oasis:names:tc:opendocument:xmlns:manifest:1.0": "manifest",
    "http://openoffice.org/2000/office": "office",
    "http://openoffice.org/2000/text": "text",
    "http://openoffice.org/2000/table": "table",
    "http://openoffice.org/2000/drawing": "draw",
    "http://openoffice.org/2000/presentation": "presentation",
    "http://openoffice.org/2000/style": "style",
    "http://openoffice.org/2001/manifest": "manifest",
}

# Containers whose content is skipped entirely.
_SKIP = {
    "text:table-of-content", "text:alphabetical-index", "text:illustration-index",
    "text:table-index", "text:object-index", "text:user-index", "text:bibliography",
    "text:tracked-changes", "office:annotation", "office:annotation-end", "office:forms",
    "text:sequence-decls", "text:variable-decls", "text:user-field-decls",
    "text:dde-connection-decls", "office:scripts", "office:event-listeners",
    "draw:image", "draw:object", "draw:object-ole", "svg:title", "svg:desc",
    "table:table-source", "table:named-expressions", "table:database-ranges",
    "table:content-validations", "table:label-ranges", "presentation:notes",
    "text:note", "text:note-citation",
}


def _q(el) -> str:
    """'prefix:local' of an element ('' for comments and unknown namespaces)."""
    tag = el.tag
    if not isinstance(tag, str) or not tag.startswith("{"):
        return ""
    uri, local = tag[1:].split("}", 1)
    prefix = _NS.get(uri)
    if prefix is None:
        return "svg:" + local if uri.endswith(":svg-compatible:1.0") else ""
    return f"{prefix}:{local}"


def attr(el, prefix: str, name: str, default=None):
    for uri, p in _NS.items():
        if p == prefix:
            value = el.get(f"{{{uri}}}{name}")
            if value is not None:
                return value
    return default


def int_attr(el, prefix: str, name: str, default: int = 1) -> int:
    try:
        return max(0, int(attr(el, prefix, name, default)))
    except (TypeError, ValueError):
        return default


# ----------------------------------------------------------------------------- text


class Walker:
    def __init__(self, page: int | None = None):
        self.out: list[Element] = []
        self.page = page

    def emit(self, kind: str, text: str, level: int | None = None, **meta) -> None:
        text = _tidy(text)
        if text:
            self.out.append(Element(kind, text, page=self.page, level=level, meta=meta))

    # -- inline --------------------------------------------------------------------
    def inline(self, el, notes: list[str], frames: list) -> str:
        parts: list[str] = []
        if el.text:
            parts.append(el.text)
        for child in el:
            q = _q(child)
            if q == "text:s":
                parts.append(" " * int_attr(child, "text", "c", 1))
            elif q == "text:tab" or q == "text:tab-stop":
                parts.append("\t")
            elif q == "text:line-break":
                parts.append("\n")
            elif q in ("text:note", "text:footnote", "text:endnote"):
                body = [c for c in child if _q(c) in ("text:note-body", "text:footnote-body",
                                                       "text:endnote-body")]
                for b in body:
                    note = " ".join(self.inline(p, notes, frames) for p in b)
                    if note.strip():
                        notes.append(note)
            elif q in ("draw:frame", "draw:custom-shape", "draw:rect", "draw:g",
                       "draw:text-box"):
                frames.append(child)
            elif q in _SKIP or q == "text:deletion":
                pass
            else:
                parts.append(self.inline(child, notes, frames))
            if child.tail:
                parts.append(child.tail)
        return "".join(parts)

    # -- blocks --------------------------------------------------------------------
    def blocks(self, node, depth: int = -1) -> None:
        for child in node:
            q = _q(child)
            if q in _SKIP or not q:
                continue
            if q in ("text:h", "text:p"):
                notes: list[str] = []
                frames: list = []
                text = self.inline(child, notes, frames)
                if q == "text:h":
                    level = int_attr(child, "text", "outline-level", 0) or \
                        int_attr(child, "text", "level", 1) or 1
                    self.emit("heading", text, level=min(level, 10))
                elif depth >= 0:
                    self.emit("list_item", text, depth=depth)
                else:
                    self.emit("paragraph", text)
                for note in notes:
                    self.emit("paragraph", note, note=True)
                for frame in frames:
                    self.blocks([frame] if _q(frame) == "draw:text-box" else frame, depth)
            elif q in ("text:list", "text:ordered-list", "text:unordered-list"):
                for item in child:
                    if _q(item) in ("text:list-item", "text:list-header"):
                        self.blocks(item, depth + 1)
            elif q == "table:table":
                cells = table_cells(child, self)
                if cells:
                    self.out.append(Element("table", render_table(cells), page=self.page,
                                            meta={"cells": cells}))
            else:  # sections, frames, text boxes, shapes, groups: look inside
                self.blocks(child, depth)


def _tidy(text: str) -> str:
    lines = [" ".join(line.replace("\t", " ").split()) for line in text.split("\n")]
    return "\n".join(line for line in lines if line).strip()


def _cell_text(cell, walker: Walker) -> str:
    inner = Walker(walker.page)
    inner.blocks(cell)
    text = " ".join(e.text.replace("\n", " ") for e in inner.out)
    if not text:
        value = attr(cell, "office", "value") or attr(cell, "office", "date-value") or \
            attr(cell, "office", "string-value") or ""
        text = value
    return " ".join(text.split())


def _rows(table):
    """table:table-row elements of a table, through header-rows and row-groups."""
    for child in table:
        q = _q(child)
        if q == "table:table-row":
            yield child
        elif q in ("table:table-header-rows", "table:table-rows", "table:table-row-group"):
            yield from _rows(child)


def row_cells(row, walker: Walker) -> list[str]:
    """The cell texts of one ``table:table-row`` (repeated cells expanded, trailing empty
    ones dropped, at most ``MAX_COLUMNS``)."""
    cells: list[str] = []
    pending_empty = 0
    for cell in row:
        q = _q(cell)
        if q not in ("table:table-cell", "table:covered-table-cell"):
            continue
        repeat = int_attr(cell, "table", "number-columns-repeated", 1) or 1
        text = _cell_text(cell, walker) if q == "table:table-cell" else ""
        if not text:
            pending_empty += repeat
            continue
        if len(cells) + pending_empty >= MAX_COLUMNS:
            break
        cells.extend([""] * pending_empty)
        pending_empty = 0
        cells.extend([text] * min(repeat, MAX_REPEAT, MAX_COLUMNS - len(cells)))
    return cells


def table_cells(table, walker: Walker) -> list[list[str]]:
    rows: list[list[str]] = []
    for row in _rows(table):
        cells = row_cells(row, walker)
        if not any(cells):
            continue
        repeat = int_attr(row, "table", "number-rows-repeated", 1) or 1
        rows.extend([cells] * min(repeat, MAX_REPEAT))
    if not rows:
        return []
    width = max(len(r) for r in rows)
    rows = [r + [""] * (width - len(r)) for r in rows]
    keep = [c for c in range(width) if any(r[c] for r in rows)]
    return [[r[c] for c in keep] for r in rows]


# ----------------------------------------------------------------------------- container


def _parse(data: bytes):
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False, remove_comments=True, remove_pis=True)
    return etree.fromstring(data, parser=parser)


def read_member(zf: zipfile.ZipFile, name: str, ctx: ExtractContext) -> bytes:
    info = zf.getinfo(name)
    limits = ctx.limits
    if info.file_size > limits.max_member_bytes:
        raise ExtractionError(
            ErrorCode.ZIP_BOMB, f"odf: {name} expands to {info.file_size} bytes "
            f"(limit {limits.max_member_bytes})")
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > 10 * 1024 * 1024 and ratio > limits.max_ratio:
        raise ExtractionError(ErrorCode.ZIP_BOMB, f"odf: {name} ratio 1:{ratio:.0f}")
    return zf.read(info)


def encryption(zf: zipfile.ZipFile, ctx: ExtractContext) -> dict | None:
    """The manifest's encryption data for content.xml, or None when not encrypted."""
    if "META-INF/manifest.xml" not in zf.namelist():
        return None
    manifest = _parse(read_member(zf, "META-INF/manifest.xml", ctx))
    for entry in manifest:
        if attr(entry, "manifest", "full-path") != "content.xml":
            continue
        for data in entry:
            if _q(data) != "manifest:encryption-data":
                continue
            info = {"checksum-type": attr(data, "manifest", "checksum-type"),
                    "checksum": attr(data, "manifest", "checksum")}
            for part in data:
                for key in ("algorithm-name", "initialisation-vector", "key-derivation-name",
                            "iteration-count", "salt", "key-size",
                            "start-key-generation-name"):
                    value = attr(part, "manifest", key)
                    if value is not None:
                        info.setdefault(key, value)
            return info
    return None


def _decrypt(raw: bytes, enc: dict, password: str) -> bytes | None:
    """ODF 1.2 AES-256-CBC decryption of one member; None if the password is wrong."""
    import base64
    import hashlib
    import zlib

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    if "aes256-cbc" not in (enc.get("algorithm-name") or ""):
        raise ExtractionError(ErrorCode.ENCRYPTED, "odf: encrypted with a legacy cipher "
                              f"({enc.get('algorithm-name')}); not supported")
    start = enc.get("start-key-generation-name") or ""
    digest = hashlib.sha256 if "sha256" in start else hashlib.sha1
    start_key = digest(password.encode("utf-8")).digest()
    key = hashlib.pbkdf2_hmac("sha1", start_key, base64.b64decode(enc["salt"]),
                              int(enc.get("iteration-count") or 1024),
                              int(enc.get("key-size") or 32))
    iv = base64.b64decode(enc["initialisation-vector"])
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    plain = decryptor.update(raw) + decryptor.finalize()
    if plain:
        pad = plain[-1]
        if 1 <= pad <= 16:
            plain = plain[:-pad]
    checksum = enc.get("checksum")
    if checksum and "sha256-1k" in (enc.get("checksum-type") or ""):
        if hashlib.sha256(plain[:1024]).digest() != base64.b64decode(checksum):
            return None
    try:
        return zlib.decompressobj(-15).decompress(plain)
    except zlib.error:
        return None


def content_xml(zf: zipfile.ZipFile, path: Path, ctx: ExtractContext, fmt: str) -> tuple[bytes, bool]:
    if "content.xml" not in zf.namelist():
        raise ExtractionError(ErrorCode.CORRUPT, f"{fmt}: no content.xml in the package")
    enc = encryption(zf, ctx)
    raw = read_member(zf, "content.xml", ctx)
    if enc is None:
        return raw, False
    passwords = ctx.passwords_for(path)
    if not passwords:
        raise ExtractionError(
            ErrorCode.ENCRYPTED, f"{fmt}: password-protected OpenDocument file (password required)")
    for password in passwords:
        plain = _decrypt(raw, enc, password)
        if plain is not None:
            return plain, True
    raise ExtractionError(ErrorCode.ENCRYPTED, f"{fmt}: configured password did not open it")


def _headers_footers(zf: zipfile.ZipFile, ctx: ExtractContext) -> tuple[list[Element], list[Element]]:
    if "styles.xml" not in zf.namelist():
        return [], []
    try:
        styles = _parse(read_member(zf, "styles.xml", ctx))
    except ExtractionError:
        raise
    except Exception:  # noqa: BLE001 - no headers then; the body is what matters
        return [], []
    headers: list[Element] = []
    footers: list[Element] = []
    seen: set[tuple[str, str]] = set()
    for el in styles.iter():
        q = _q(el)
        cls = attr(el, "presentation", "class") if q == "draw:frame" else None
        if q in ("style:header", "style:header-left", "style:header-first") or cls == "header":
            kind, out = "header", headers
        elif q in ("style:footer", "style:footer-left", "style:footer-first") or cls == "footer":
            kind, out = "footer", footers
        else:
            continue
        walker = Walker()
        walker.blocks(el)
        text = "\n".join(e.text for e in walker.out).strip()
        if text and (kind, text) not in seen:
            seen.add((kind, text))
            out.append(Element(kind, text))
    return headers, footers


def _body(root, kind: str, fmt: str):
    for child in root:
        if _q(child) == "office:body":
            for inner in child:
                if _q(inner) == f"office:{kind}":
                    return inner
            return child  # OpenOffice.org 1.x: the content sits in office:body itself
    raise ExtractionError(ErrorCode.CORRUPT, f"{fmt}: no office:{kind} body")


def _numbered(body, tag: str):
    """``(1-based number, child)`` for each child of ``body`` that is a ``tag`` (sheets, slides)."""
    return enumerate((child for child in body if _q(child) == tag), start=1)


def _text_document(root) -> list[Element]:
    body = _body(root, "text", "odt")
    walker = Walker()
    walker.blocks(body)
    return walker.out


def _spreadsheet(root) -> tuple[list[Element], int]:
    out: list[Element] = []
    number = 0
    for number, sheet in _numbered(_body(root, "spreadsheet", "ods"), "table:table"):
        name = attr(sheet, "table", "name") or f"Sheet{number}"
        cells = table_cells(sheet, Walker(number))
        if not cells:
            continue
        out.append(Element("table", render_table(cells, context=f"Sheet: {name}"),
                           page=number, meta={"sheet": name, "cells": cells}))
    return out, number


def _presentation(root) -> tuple[list[Element], int]:
    out: list[Element] = []
    number = 0
    for number, page in _numbered(_body(root, "presentation", "odp"), "draw:page"):
        walker = Walker(number)
        notes: list = []
        for shape in page:
            q = _q(shape)
            if q == "presentation:notes":
                notes.append(shape)
                continue
            cls = attr(shape, "presentation", "class")
            if cls in ("title", "subtitle") and q == "draw:frame":
                inner = Walker(number)
                inner.blocks(shape)
                text = " ".join(e.text for e in inner.out)
                walker.emit("heading" if cls == "title" else "paragraph", text,
                            level=1 if cls == "title" else None)
            elif cls in ("page-number", "date-time", "footer", "header"):
                continue
            else:
                walker.blocks([shape])
        for note in notes:
            inner = Walker(number)
            for frame in note:
                if attr(frame, "presentation", "class") == "notes":
                    inner.blocks([frame])
            text = "\n".join(e.text for e in inner.out)
            walker.emit("paragraph", text, notes=True)
        out.extend(walker.out)
    return out, number


def extract(path: Path, mime: str, ctx: ExtractContext) -> Extraction:
    """Router entry point (see ``extractors.registry.EXTRACTORS``)."""
    from lxml import etree

    fmt = FAMILY[mime]
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ExtractionError(ErrorCode.CORRUPT, f"{fmt}: not a readable ZIP package: {exc}") from exc
    warnings: list[str] = []
    with zf:
        data, decrypted = content_xml(zf, path, ctx, fmt)
        if decrypted:
            warnings.append("decrypted with a configured password")
        try:
            root = _parse(data)
        except etree.XMLSyntaxError as exc:
            raise ExtractionError(ErrorCode.CORRUPT, f"{fmt}: content.xml: {exc}") from exc
        pages = None
        if fmt == "ods":
            elements, pages = _spreadsheet(root)
        elif fmt == "odp":
            elements, pages = _presentation(root)
        else:
            elements = _text_document(root)
        if fmt != "ods" and not decrypted:  # styles.xml is encrypted too
            headers, footers = _headers_footers(zf, ctx)
            elements = headers + elements + footers
    return Extraction.of(elements, f"{fmt}/lxml", f"lxml-{etree.__version__}+{OUR_VERSION}", mime, warnings, pages)
