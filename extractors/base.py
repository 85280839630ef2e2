"""The one contract every format family implements.

An extractor turns the bytes of one file into an ordered list of ``Element``s.
Every failure is an ``ExtractionError`` with a short machine code and a message a
person can act on; nothing else may escape ``extractors.extract``.
"""
from __future__ import annotations

from dataclasses import dataclass, field


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
class Extraction:
    elements: list[Element]
    extractor: str  # e.g. "pdf/pypdf", "docx/python-docx", "html/unstructured"
    extractor_version: str  # version of the parsing library plus ours, e.g. "pypdf-7.1.1+1"
    mime: str
    pages: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "\n\n".join(e.text for e in self.elements if e.text)


class ExtractionError(Exception):
    """A document that cannot be extracted.

    code: "empty-file" | "unsupported-type" | "corrupt" | "encrypted" | "too-large" |
          "no-text" | "timeout" | "extractor-crash"
    """

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
