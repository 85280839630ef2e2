"""The one contract every format family implements.

An extractor turns the bytes of one file into an ordered list of ``Element``s.
Every failure is an ``ExtractionError`` with a short machine code and a message a
person can act on; nothing else may escape ``extractors.extract``.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ErrorCode


@dataclass
class Element:
    """One piece of a document in reading order.

    kind:  "title" | "heading" | "paragraph" | "list_item" | "table" | "header" |
           "footer" | "code" | "text"
    level: heading depth (1 = top) for kind "title"/"heading", else None.
    page:  1-based page (PDF page, slide number, sheet index) when the format has pages.
    """

    kind: str
    text: str
    page: int | None = None
    level: int | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class Child:
    """A document inside a document (mail attachment, archive member).

    name:  the member's path inside its parent as the parent states it, made safe for
           display and addressing ("a/b.pdf"; never absolute, never with ".."); the
           child's address is ``<parent uri>!<name>``.
    path:  a file under ``ExtractContext.workdir`` holding the member's bytes, written
           under a generated name (the member name is NEVER used as a file system path).
    """

    name: str
    path: str
    size: int
    meta: dict = field(default_factory=dict)


@dataclass
class Limits:
    """Bounds for one parse (and for archives, the whole expansion)."""

    max_expanded_bytes: int = 1024 * 1024 * 1024  # all members of one archive together
    max_member_bytes: int = 256 * 1024 * 1024
    max_members: int = 10_000
    max_ratio: float = 200.0  # uncompressed : compressed, per member and in total
    max_depth: int = 3  # archives within archives (a top-level file is depth 0)
    ocr_pages: int = 200  # most pages OCR'd in one document
    # PDF: decoded size a stream may declare before it is decoded (extractors._pdfbudget)
    max_stream_bytes: int = 256 * 1024 * 1024  # one stream
    max_decoded_bytes: int = 1024 * 1024 * 1024  # all the streams of one document
    # Spreadsheets and delimited text (extractors.spreadsheet): cut with a "truncated:" warning
    max_sheet_cells: int = 10_000_000  # non-empty cells read from one sheet
    max_sheet_chars: int = 50_000_000  # characters of output from all sheets of one document


@dataclass
class ExtractContext:
    """What an extractor may use beyond the file: a private work folder for children,
    limits, configured passwords, and how deep in a container we are."""

    workdir: Path | None = None
    limits: Limits = field(default_factory=Limits)
    passwords: list[tuple[str, str]] = field(default_factory=list)  # (path glob, password)
    depth: int = 0
    ocr: bool = True
    source_path: str | None = None  # the path the passwords' globs are matched against

    def passwords_for(self, path: str | Path) -> list[str]:
        p = str(self.source_path or path)
        return [pw for pattern, pw in self.passwords if fnmatch.fnmatch(p, pattern)]


@dataclass
class Extraction:
    elements: list[Element]
    extractor: str  # e.g. "pdf/pypdf", "docx/python-docx", "html/unstructured"
    extractor_version: str  # version of the parsing library plus ours, e.g. "pypdf-7.1.1+1"
    mime: str
    pages: int | None = None
    warnings: list[str] = field(default_factory=list)
    children: list[Child] = field(default_factory=list)
    # OCR: confidence 0-100 per OCR'd page (1-based page -> mean word confidence)
    ocr_pages: dict[int, float] = field(default_factory=dict)
    # title, authors, created, modified, subject, keywords, language, pages, mail headers, members
    metadata: dict = field(default_factory=dict)  # (extractors.metadata)
    # warnings the parsing libraries raised (kept out of the log: extractors.library_warnings)
    third_party_warnings: int = 0

    @property
    def text(self) -> str:
        return "\n\n".join(e.text for e in self.elements if e.text)

    @classmethod
    def of(cls, elements: list[Element], extractor: str, extractor_version: str, mime: str,
           warnings: list[str], pages: int | None = None) -> "Extraction":
        """An extraction whose warnings say "no text" when there are no elements."""
        if not elements:
            warnings.append("no text")
        return cls(elements=elements, extractor=extractor, extractor_version=extractor_version, mime=mime,
                   pages=pages, warnings=warnings)


class ExtractionError(Exception):
    """A document that cannot be extracted.

    code: an :class:`extractors.errors.ErrorCode` (or its string value; any other is refused).
    """

    def __init__(self, code: ErrorCode | str, message: str):
        try:
            self.code = ErrorCode(code)
        except ValueError:
            raise ValueError(f"ExtractionError: unknown error code {code!r} (see extractors.errors.ErrorCode)") from None
        super().__init__(f"{self.code}: {message}")
        self.message = message
