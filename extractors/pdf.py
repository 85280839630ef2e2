"""PDF text extraction with pypdf.

One ``Element(kind="paragraph", page=N)`` per block of a page's text, blocks being
separated by blank lines (pypdf's layout of the text layer; a page without blank
lines is one block). Pages are 1-based.

* Encrypted with an empty user password (common: "no copying" PDFs): opened.
* Encrypted otherwise: ``ExtractionError("encrypted", "password required")``.
* No text on any page (scans, images only): an ``Extraction`` with no elements and
  the warning "no text layer"; OCR or quarantine is the pipeline's decision.
* A page whose text cannot be extracted is recorded in ``warnings`` (with the page
  number and the error) and the others are kept; if every page fails, the document
  is ``corrupt``.
"""
from __future__ import annotations

import re
from pathlib import Path

from .base import ExtractContext, Element, Extraction, ExtractionError

EXTRACTOR = "pdf/pypdf"
OUR_VERSION = 1
MIME = "application/pdf"

_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")


def split_blocks(text: str) -> list[str]:
    """Split page text on blank lines; strip blocks, drop empty ones."""
    return [b.strip() for b in _BLANK_LINES.split(text) if b.strip()]


def extract_pdf(path: Path) -> Extraction:
    import pypdf
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    version = f"pypdf-{pypdf.__version__}+{OUR_VERSION}"
    warnings: list[str] = []

    try:
        reader = pypdf.PdfReader(path, strict=False)
    except PdfReadError as exc:
        raise ExtractionError("corrupt", f"pdf: cannot parse file structure: {exc}") from exc

    if reader.is_encrypted:
        try:
            result = reader.decrypt("")
        except DependencyError as exc:
            raise ExtractionError(
                "extractor-crash", f"pdf: decryption needs a missing library: {exc}"
            ) from exc
        except (NotImplementedError, PdfReadError) as exc:
            raise ExtractionError(
                "encrypted", f"unsupported encryption, cannot open: {exc}"
            ) from exc
        if not result:  # PasswordType.NOT_DECRYPTED == 0
            raise ExtractionError("encrypted", "password required")
        warnings.append("encrypted with an empty user password; opened without one")

    try:
        pages = reader.pages
        page_count = len(pages)
    except (FileNotDecryptedError, PdfReadError) as exc:
        raise ExtractionError("corrupt", f"pdf: cannot read page tree: {exc}") from exc

    elements: list[Element] = []
    failed: list[int] = []
    for index in range(page_count):
        number = index + 1
        try:
            text = pages[index].extract_text() or ""
        except Exception as exc:  # noqa: BLE001 - recorded per page, see module docstring
            failed.append(number)
            warnings.append(f"page {number}: text extraction failed: {type(exc).__name__}: {exc}")
            continue
        for block in split_blocks(text):
            elements.append(Element(kind="paragraph", text=block, page=number))

    if page_count and len(failed) == page_count:
        raise ExtractionError(
            "corrupt", f"pdf: text extraction failed on all {page_count} pages ({warnings[-1]})"
        )
    if page_count == 0:
        warnings.append("no pages")
    if not elements:
        warnings.append("no text layer")
    return Extraction(
        elements=elements,
        extractor=EXTRACTOR,
        extractor_version=version,
        mime=MIME,
        pages=page_count,
        warnings=warnings,
    )


def extract(path: Path, mime: str, ctx: ExtractContext) -> Extraction:
    """Router entry point (see ``extractors._EXTRACTORS``)."""
    return extract_pdf(path)
