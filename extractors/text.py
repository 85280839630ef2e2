"""Plain text and TSV: charset detection, then paragraphs (text) or one table (TSV).

Decoding (``decode_bytes``), in order:

1. a byte-order mark: UTF-8, UTF-32 LE/BE, UTF-16 LE/BE;
2. UTF-16 without a BOM (a NUL in every other byte of mostly-ASCII text);
3. strict UTF-8; UTF-8 with a few stray bytes (valid multi-byte characters outnumber
   the invalid bytes 10:1) is UTF-8 with U+FFFD for the strays and a warning;
4. ``charset-normalizer``; among its equally good candidates the more common code
   page wins (cp1252 before cp1250, cp866 before cp1125, ...: ``_PREFERRED``), since
   short texts rarely tell code pages of one script apart;
5. nothing fits: cp1252 with U+FFFD for undefined bytes, and a warning.

Every guess other than UTF-8 (with or without BOM) is reported in ``warnings``
("encoding: cp866 (detected)"), so the quality report can show it.

Paragraphs (``split_paragraphs``): our own splitter, not unstructured's
``partition_text``. Measured on the corpora: ``partition_text`` needs 26 s for
War and Peace (3.2 MB) where this needs well under a second, and its title
classifier marks dialogue lines ('"Very," said Pierre.') and the tails of wrapped
sentences ('the Second Division.') as headings, which would cut sections (and
chunks) in the wrong places. Rules:

* blocks are separated by blank lines; a form feed starts a new page (``page`` is then
  set on every element, 1-based);
* a block's lines keep their line breaks, each line stripped of surrounding blanks;
* Markdown-style ``# Heading`` lines and setext headings (a line underlined with
  ``===`` / ``---``) are headings with their level;
* a block of one short line (at most 80 characters, 12 words) that starts with a
  capital or digit, does not end in sentence punctuation, has at most 3 words or at
  least half of them capitalised, and is followed by more text is a heading (level 1
  if it is in capitals, else 2): "CHAPTER I", "Introduction", "Terms and Conditions";
* a block whose every line starts with a bullet or a number ("- ", "* ", "• ", "1. ",
  "2) ") is a run of ``list_item`` elements;
* everything else is a ``paragraph``.

TSV (for direct callers; the router sends TSV to ``extractors.spreadsheet``, which
streams it with the same decoding): decoded as above, split on tabs (``csv`` module, tab dialect), empty rows
dropped; one ``table`` element whose first line is the header row (the chunker repeats
the first line in every part of a split table) with ``meta["cells"]``.
"""
from __future__ import annotations

import codecs
import csv
import io
import re
from pathlib import Path

from ._tables import render_table
from .base import Element, ExtractContext, Extraction, ExtractionError
from .detect import bomless_utf16
from .mimes import TSV
from .errors import ErrorCode

OUR_VERSION = 1

BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

# Code pages in the order we believe them when charset-normalizer finds several equally
# plausible (most common in document collections first).
_PREFERRED = [
    "cp1252", "cp1251", "cp866", "cp932", "shift_jis", "gb18030", "gbk", "gb2312", "big5",
    "cp949", "euc_kr", "euc_jp", "cp1250", "iso8859_2", "cp1253", "cp1254", "cp1255",
    "cp1256", "cp1257", "cp1258", "koi8_r", "koi8_u", "cp874", "iso8859_15", "latin_1",
    "mac_roman", "cp437", "cp850", "cp037", "cp500",
]
# charset-normalizer's names -> the code page we decode with (a superset or the same
# table: cp932 decodes everything shift_jis does, and Windows writes cp932).
_DECODE_AS = {"shift_jis": "cp932", "shift_jis_2004": "cp932", "shift_jisx0213": "cp932",
              "cp1125": "cp866", "gb2312": "gb18030", "gbk": "gb18030"}


def charset_normalizer_version() -> str:
    try:
        import charset_normalizer

        return charset_normalizer.__version__
    except ImportError:
        return "none"


def decode_bytes(data: bytes) -> tuple[str, str, list[str]]:
    """Decode a text file's bytes: ``(text, encoding, warnings)`` (see module doc)."""
    for bom, codec in BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec), codec, []
            except UnicodeDecodeError:
                text = data.decode(codec, "replace")
                return text, codec, [f"encoding: {codec} with invalid bytes replaced"]
    wide = bomless_utf16(data[:8192])
    if wide:
        text = data[: len(data) // 2 * 2].decode(wide, "replace")
        return text, wide, [f"encoding: {wide} without BOM (detected)"]
    try:
        return data.decode("utf-8"), "utf-8", []
    except UnicodeDecodeError:
        pass
    lenient = data.decode("utf-8", "replace")
    bad = lenient.count("\ufffd")
    good = sum(1 for ch in lenient if ord(ch) > 127 and ch != "\ufffd")
    if good >= 10 * bad:
        return lenient, "utf-8", [f"encoding: utf-8 with {bad} invalid byte(s) replaced"]
    guess = _guess_code_page(data)
    if guess:
        return data.decode(guess, "replace"), guess, [f"encoding: {guess} (detected)"]
    return (data.decode("cp1252", "replace"), "cp1252",
            ["encoding: unknown, decoded as cp1252 with undefined bytes replaced"])


def _guess_code_page(data: bytes) -> str | None:
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        return None
    results = list(from_bytes(data))
    if not results:
        return None
    best = results[0]
    tied = [r for r in results
            if r.chaos <= best.chaos + 0.01 and r.coherence >= best.coherence - 0.01]
    rank = {name: i for i, name in enumerate(_PREFERRED)}
    choice = None
    for r in tied:
        for name in [r.encoding, *r.could_be_from_charset]:
            if name in rank and (choice is None or rank[name] < rank[choice]):
                choice = name
    encoding = choice or best.encoding
    encoding = _DECODE_AS.get(encoding, encoding)
    try:
        data.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        encoding = _DECODE_AS.get(best.encoding, best.encoding)
    return encoding


def read_text(path: Path) -> tuple[str, str, list[str]]:
    return decode_bytes(path.read_bytes())


# ----------------------------------------------------------------------------- paragraphs

_BLANK = re.compile(r"\n[ \t\v\u00a0]*\n")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_ATX = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_SETEXT = re.compile(r"^(=+|-+)\s*$")
_BULLET = re.compile(r"^(?:[-*+\u2022\u25e6\u25aa\u2013\u00b7]|\(?\d{1,3}[.)])\s+\S")
_SENTENCE_END = tuple(".,;:!?\"')]}\u2026\u00bb\u201d\u2019")


def split_paragraphs(text: str) -> list[Element]:
    """Elements of a plain text (see module doc)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\ufeff", "")
    text = _CONTROL.sub("", text)
    pages = text.split("\f")
    paged = len(pages) > 1
    out: list[Element] = []
    for number, page_text in enumerate(pages, start=1):
        page = number if paged else None
        blocks = [b for b in (_clean_block(b) for b in _BLANK.split(page_text)) if b]
        for i, lines in enumerate(blocks):
            out.extend(_block_elements(lines, page, has_next=i + 1 < len(blocks)))
    return out


def _clean_block(block: str) -> list[str]:
    return [" ".join(line.split()) for line in block.split("\n") if line.strip()]


def _block_elements(lines: list[str], page: int | None, has_next: bool) -> list[Element]:
    if len(lines) == 1:
        atx = _ATX.match(lines[0])
        if atx:
            return [Element("heading", atx.group(2), page=page, level=len(atx.group(1)))]
        if has_next and _heading_like(lines[0]):
            level = 1 if lines[0].upper() == lines[0] else 2
            return [Element("heading", lines[0], page=page, level=level)]
    if len(lines) >= 2 and _SETEXT.match(lines[1]) and len(lines[0]) <= 120:
        level = 1 if lines[1].startswith("=") else 2
        heading = Element("heading", lines[0], page=page, level=level)
        rest = lines[2:]
        return [heading] + (_block_elements(rest, page, has_next) if rest else [])
    if all(_BULLET.match(line) for line in lines) and (len(lines) > 1 or has_next):
        return [Element("list_item", line, page=page) for line in lines]
    return [Element("paragraph", "\n".join(lines), page=page)]


def _heading_like(line: str) -> bool:
    if len(line) > 80 or len(line.split()) > 12 or line.endswith(_SENTENCE_END):
        return False
    if not (line[0].isupper() or line[0].isdigit()):
        return False
    letters = sum(ch.isalpha() for ch in line)
    if letters < 2 or _BULLET.match(line):
        return False
    words = [w for w in line.split() if any(ch.isalpha() for ch in w)]
    capitalised = sum(1 for w in words if w[0].isupper() or w[0].isdigit())
    # "Early life", "CHAPTER I", "Terms and Conditions"; not a plain sentence that
    # merely lacks its full stop ("The quick brown fox jumps over the lazy dog").
    return len(words) <= 3 or capitalised * 2 >= len(words)


# ----------------------------------------------------------------------------- TSV


def split_table(text: str, delimiter: str = "\t") -> list[list[str]]:
    reader = csv.reader(io.StringIO(text.replace("\r\n", "\n").replace("\r", "\n")), delimiter=delimiter)
    rows = [[" ".join(cell.split()) for cell in row] for row in reader]
    rows = [row for row in rows if any(row)]
    width = max((len(row) for row in rows), default=0)
    return [row + [""] * (width - len(row)) for row in rows]


# ----------------------------------------------------------------------------- entry


def extract(path: Path, mime: str, ctx: ExtractContext) -> Extraction:
    """Router entry point (see ``extractors.registry.EXTRACTORS``): text/plain and TSV."""
    data = path.read_bytes()
    text, encoding, warnings = decode_bytes(data)
    version = f"charset-normalizer-{charset_normalizer_version()}+{OUR_VERSION}"
    if mime == TSV:
        try:
            cells = split_table(text)
        except csv.Error as exc:
            raise ExtractionError(ErrorCode.CORRUPT, f"tsv: {exc}") from exc
        elements = []
        if cells:
            elements.append(Element("table", render_table(cells), meta={"cells": cells}))
        fmt = "tsv"
    else:
        elements = split_paragraphs(text)
        fmt = "txt"
    pages = max((e.page or 0 for e in elements), default=0) or None
    return Extraction.of(elements, f"{fmt}/text", version, mime, warnings, pages)
