"""The format registry: MIME type -> format family -> parsing module, and ``run``, which
parses a file with its family's module.

``FAMILY`` maps a MIME type to a format family (the name in ``Extraction.extractor`` and
in error messages); ``EXTRACTORS`` maps a family to ``(module, function)`` in this
package (spreadsheets and delimited text, i.e. XLSX/XLSM/XLTX/XLTM, ODS/OTS/SXC, CSV and
TSV, go to ``spreadsheet``, which streams them row by row with the sheet name and header
row on every batch). The module is imported only when a file of that family is extracted
(the package stays cheap to import), so a missing or broken module fails only its own
family, with ``extractor-crash``.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from . import library_warnings, metadata
from .base import ExtractContext, Extraction, ExtractionError
from .errors import ErrorCode
from .mimes import (
    BINARY_EXTENSIONS, BMP, BZIP2, CSV, DOC, DOCM, DOCX, DOTM, DOTX, EMAIL, EPUB, GIF, GZIP,
    HTML, JPEG, JSON, MARKDOWN, MSG, NDJSON, ODP, ODS, ODT, OTP, OTS, OTT, PDF, PNG, PPT,
    PPTM, PPTX, RTF, SEVEN_Z, SIGNED_EXTENSIONS, SXC, SXI, SXW, TAR, TAR_BZ2, TAR_GZ,
    TAR_XZ, TEXT, TEXT_EXTENSIONS, TIFF, TSV, WEBP, XLS, XLSM, XLSX, XLTM, XLTX, XML, XZ,
    ZIP,
)
from .sandbox import stage

# MIME -> format family: the name in Extraction.extractor and in error messages.
FAMILY = {
    PDF: "pdf",
    DOCX: "docx", DOCM: "docx", DOTX: "docx", DOTM: "docx",
    PPTX: "pptx", PPTM: "pptx",
    XLSX: "xlsx", XLSM: "xlsx", XLTX: "xlsx", XLTM: "xlsx",
    ODT: "odt", OTT: "odt",
    ODS: "ods", OTS: "ods",
    ODP: "odp", OTP: "odp",
    SXW: "odt", SXC: "ods", SXI: "odp",
    EPUB: "epub",
    DOC: "doc", XLS: "xls", PPT: "ppt",
    MARKDOWN: "md",
    HTML: "html",
    TEXT: "txt",
    CSV: "csv",
    TSV: "tsv",
    RTF: "rtf",
    JSON: "json",
    NDJSON: "ndjson",
    XML: "xml",
    EMAIL: "eml",
    MSG: "msg",
    PNG: "image", JPEG: "image", TIFF: "image", BMP: "image", GIF: "image", WEBP: "image",
    ZIP: "zip",
    TAR: "tar",
    TAR_GZ: "tar.gz", TAR_BZ2: "tar.bz2", TAR_XZ: "tar.xz",
    GZIP: "gz", BZIP2: "bz2", XZ: "xz",
    SEVEN_Z: "7z",
}

# format family -> (module in this package, function(path, mime, ctx) -> Extraction)
EXTRACTORS: dict[str, tuple[str, str]] = {
    "pdf": ("pdf", "extract"),
    "docx": ("docx", "extract"),
    "pptx": ("unstructured_family", "extract"),
    "xlsx": ("spreadsheet", "extract"),
    "md": ("unstructured_family", "extract"),
    "html": ("unstructured_family", "extract"),
    "csv": ("spreadsheet", "extract"),
    "txt": ("text", "extract"),
    "tsv": ("spreadsheet", "extract"),
    "rtf": ("rtf", "extract"),
    "json": ("structured", "extract"),
    "ndjson": ("structured", "extract"),
    "xml": ("structured", "extract"),
    "odt": ("odf", "extract"),
    "ods": ("spreadsheet", "extract"),
    "odp": ("odf", "extract"),
    "epub": ("epub", "extract"),
    "doc": ("legacy_office", "extract"),
    "xls": ("legacy_office", "extract"),
    "ppt": ("legacy_office", "extract"),
    "eml": ("email_family", "extract"),
    "msg": ("email_family", "extract"),
    "image": ("ocr", "extract"),
    "zip": ("archive", "extract"),
    "tar": ("archive", "extract"),
    "tar.gz": ("archive", "extract"),
    "tar.bz2": ("archive", "extract"),
    "tar.xz": ("archive", "extract"),
    "gz": ("archive", "extract"),
    "bz2": ("archive", "extract"),
    "xz": ("archive", "extract"),
    "7z": ("archive", "extract"),
}

# family -> what a person calls it (the "supported: ..." list of the unsupported message)
LABELS = {
    "pdf": "PDF", "docx": "Word (DOCX/DOCM/DOTX)", "doc": "Word 97-2003 (DOC)",
    "pptx": "PowerPoint (PPTX)", "ppt": "PowerPoint 97-2003 (PPT)",
    "xlsx": "Excel (XLSX/XLSM)", "xls": "Excel 97-2003 (XLS)",
    "odt": "OpenDocument text (ODT)", "ods": "OpenDocument spreadsheet (ODS)",
    "odp": "OpenDocument presentation (ODP)", "epub": "EPUB", "rtf": "RTF",
    "md": "Markdown", "html": "HTML", "txt": "plain text", "csv": "CSV", "tsv": "TSV",
    "json": "JSON", "ndjson": "NDJSON", "xml": "XML", "eml": "email (EML)",
    "msg": "Outlook (MSG)", "image": "images (PNG/JPEG/TIFF/BMP/GIF/WebP, OCR)",
    "zip": "ZIP", "tar": "TAR", "tar.gz": "tar.gz", "tar.bz2": "tar.bz2",
    "tar.xz": "tar.xz", "gz": "gzip", "bz2": "bzip2", "xz": "xz", "7z": "7z",
}

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(
    [*TEXT_EXTENSIONS, *BINARY_EXTENSIONS, *SIGNED_EXTENSIONS]
)
SUPPORTED_MIMES: frozenset[str] = frozenset(m for m, f in FAMILY.items() if f in EXTRACTORS)


def supported_summary() -> str:
    seen: list[str] = []
    for family in EXTRACTORS:
        label = LABELS.get(family, family)
        if label not in seen:
            seen.append(label)
    return ", ".join(seen)


# (magic prefix, MIME, strong). A weak (short) magic is ignored when the file is text

def run(p: Path, mime: str, ctx: ExtractContext) -> Extraction:
    """Parse ``p`` (detected as ``mime``) with its family's module and add the document's
    metadata. Raises only ``ExtractionError``: a module that cannot be imported is
    ``extractor-crash``, any other parser failure ``corrupt`` (``memory`` for
    ``MemoryError``)."""

    fmt = FAMILY[mime]
    module, function = EXTRACTORS[fmt]
    qualified = f"{__package__}.{module}"
    try:
        fn = getattr(importlib.import_module(qualified), function)
    except ModuleNotFoundError as exc:
        if exc.name == qualified:
            raise ExtractionError(
                ErrorCode.EXTRACTOR_CRASH, f"{fmt}: extractor module {qualified} is not installed"
            ) from exc
        raise ExtractionError(
            ErrorCode.EXTRACTOR_CRASH, f"{fmt}: parsing library not importable: {exc}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - a broken module fails only its family
        raise ExtractionError(
            ErrorCode.EXTRACTOR_CRASH, f"{fmt}: extractor module {qualified} failed to load: "
            f"{describe(exc)}"
        ) from exc
    stage(fmt)  # named in a timeout/crash message ("timeout after 120 s in pdf")
    try:
        with library_warnings.capture() as seen:  # pypdf & co.: counted, not in the log
            result = with_metadata(fn(p, mime, ctx), p, fmt)
        result.third_party_warnings += seen.count
        return result
    except ExtractionError:
        raise
    except ImportError as exc:
        raise ExtractionError(
            ErrorCode.EXTRACTOR_CRASH, f"{fmt}: parsing library not importable: {exc}"
        ) from exc
    except RecursionError as exc:
        raise ExtractionError(ErrorCode.CORRUPT, f"{fmt}: structure nested too deeply") from exc
    except MemoryError as exc:
        raise ExtractionError(ErrorCode.MEMORY, f"{fmt}: out of memory while parsing") from exc
    except Exception as exc:  # noqa: BLE001 - the contract: nothing else escapes
        raise ExtractionError(ErrorCode.CORRUPT, f"{fmt}: {describe(exc)}") from exc


def with_metadata(result: Extraction, p: Path, fmt: str) -> Extraction:
    """The document's own metadata (title, authors, dates ...: ``extractors.metadata``); a part
    that cannot be read is a warning, never a failure."""
    md, warning = metadata.read(p, fmt, result)
    result.metadata = {**md, **(result.metadata or {})}
    if warning:
        result.warnings.append(warning)
    return result


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, cut to 300 characters (for error messages)."""
    text = str(exc).strip() or "(no message)"
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}"
