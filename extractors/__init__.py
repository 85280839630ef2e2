"""Turn one file into an ``Extraction`` (see ``extractors.base`` for the contract).

Public API::

    extract(path, *, max_bytes=200 MiB) -> Extraction   # the router
    detect(path) -> str                                  # MIME type from content (+ extension)
    SUPPORTED_EXTENSIONS                                 # frozenset of ".pdf", ".docx", ...

Routing trusts content over names: magic bytes decide first (``%PDF-``; ZIP
containers by the part that makes them DOCX/PPTX/XLSX; executables, images, archives
and legacy OLE2 files are recognised and refused), and only text formats, which have
no magic, are routed by extension. So a PDF saved as ``report.docx`` is parsed as PDF.

This module is cheap to import: the parsing libraries are imported by the format
modules, which are imported only when a file of that family is extracted.

Every failure leaves as ``ExtractionError`` with a code from ``extractors.base``;
parser exceptions become ``corrupt`` with the format and what failed, a missing
parsing dependency becomes ``extractor-crash``.
"""
from __future__ import annotations

import mimetypes
import os
import stat
import zipfile
from pathlib import Path

from .base import Element, ExtractContext, Extraction, ExtractionError

__all__ = [
    "SUPPORTED_EXTENSIONS",
    "Element",
    "Extraction",
    "ExtractionError",
    "detect",
    "extract",
    "warm_up",
]

DEFAULT_MAX_BYTES = 200 * 1024 * 1024

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# Macro-enabled and template variants of the OOXML formats (same parsers).
DOCM = "application/vnd.ms-word.document.macroEnabled.12"
DOTX = "application/vnd.openxmlformats-officedocument.wordprocessingml.template"
DOTM = "application/vnd.ms-word.template.macroEnabled.12"
PPTM = "application/vnd.ms-powerpoint.presentation.macroEnabled.12"
XLSM = "application/vnd.ms-excel.sheet.macroEnabled.12"
XLTX = "application/vnd.openxmlformats-officedocument.spreadsheetml.template"
XLTM = "application/vnd.ms-excel.template.macroEnabled.12"
MARKDOWN = "text/markdown"
HTML = "text/html"
TEXT = "text/plain"
CSV = "text/csv"
EMAIL = "message/rfc822"
ZIP = "application/zip"
OLE2 = "application/x-ole-storage"
# An encrypted OOXML file is an OLE2 container holding "EncryptionInfo" and
# "EncryptedPackage" streams (MS-OFFCRYPTO). There is no registered MIME type for it.
ENCRYPTED_OOXML = "application/x-ooxml-encrypted"
EMPTY = "application/x-empty"
OCTET = "application/octet-stream"

# extension -> MIME for the formats we route by name (text formats have no magic).
_TEXT_EXTENSIONS = {
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".html": HTML,
    ".htm": HTML,
    ".txt": TEXT,
    ".text": TEXT,
    ".log": TEXT,
    ".csv": CSV,
    ".eml": EMAIL,
}
_BINARY_EXTENSIONS = {
    ".pdf": PDF,
    ".docx": DOCX,
    ".docm": DOCM,
    ".dotx": DOTX,
    ".dotm": DOTM,
    ".pptx": PPTX,
    ".pptm": PPTM,
    ".xlsx": XLSX,
    ".xlsm": XLSM,
    ".xltx": XLTX,
    ".xltm": XLTM,
}

# MIME -> format family: the name in Extraction.extractor and in error messages.
_FAMILY = {
    PDF: "pdf",
    DOCX: "docx",
    DOCM: "docx",
    DOTX: "docx",
    DOTM: "docx",
    PPTX: "pptx",
    PPTM: "pptx",
    XLSX: "xlsx",
    XLSM: "xlsx",
    XLTX: "xlsx",
    XLTM: "xlsx",
    MARKDOWN: "md",
    HTML: "html",
    TEXT: "txt",
    CSV: "csv",
    EMAIL: "eml",
}

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(_TEXT_EXTENSIONS) | frozenset(_BINARY_EXTENSIONS)
SUPPORTED_MIMES: frozenset[str] = frozenset(_FAMILY)

# (magic prefix, MIME, strong) for formats we recognise only to refuse them by name.
# A weak (short) magic is ignored when the file is text with a text extension (or
# none): "BMW sales.txt" must not become a bitmap, nor "MZ..." notes an executable.
_MAGIC = [
    (b"MZ", "application/x-msdownload", False),
    (b"\x7fELF", "application/x-executable", True),
    (b"\xcf\xfa\xed\xfe", "application/x-mach-binary", True),
    (b"\xfe\xed\xfa\xcf", "application/x-mach-binary", True),
    (b"\xca\xfe\xba\xbe", "application/java-vm", True),
    (b"\x89PNG\r\n\x1a\n", "image/png", True),
    (b"\xff\xd8\xff", "image/jpeg", True),
    (b"GIF87a", "image/gif", True),
    (b"GIF89a", "image/gif", True),
    (b"II*\x00", "image/tiff", True),
    (b"MM\x00*", "image/tiff", True),
    (b"BM", "image/bmp", False),
    (b"\x1f\x8b", "application/gzip", True),
    (b"BZh", "application/x-bzip2", False),
    (b"\xfd7zXZ\x00", "application/x-xz", True),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed", True),
    (b"Rar!\x1a\x07", "application/vnd.rar", True),
    (b"{\\rtf", "application/rtf", False),
    (b"ID3", "audio/mpeg", False),
    (b"OggS", "audio/ogg", False),
    (b"fLaC", "audio/flac", False),
    (b"%!PS", "application/postscript", False),
    (b"!<arch>\n", "application/x-archive", True),
    (b"SQLite format 3\x00", "application/vnd.sqlite3", True),
]
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_OLE2_BY_EXT = {
    ".doc": "application/msword",
    ".xls": "application/vnd.ms-excel",
    ".ppt": "application/vnd.ms-powerpoint",
    ".msg": "application/vnd.ms-outlook",
}
# OOXML main part -> {part content type -> file MIME}; the first entry is the default
# when [Content_Types].xml cannot be read.
_OOXML_MAIN_PARTS = {
    "word/document.xml": {
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml": DOCX,
        "application/vnd.ms-word.document.macroEnabled.main+xml": DOCM,
        "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml": DOTX,
        "application/vnd.ms-word.template.macroEnabledTemplate.main+xml": DOTM,
    },
    "ppt/presentation.xml": {
        "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml": PPTX,
        "application/vnd.ms-powerpoint.presentation.macroEnabled.main+xml": PPTM,
        "application/vnd.openxmlformats-officedocument.presentationml.slideshow.main+xml":
            "application/vnd.openxmlformats-officedocument.presentationml.slideshow",
        "application/vnd.ms-powerpoint.slideshow.macroEnabled.main+xml":
            "application/vnd.ms-powerpoint.slideshow.macroEnabled.12",
        "application/vnd.openxmlformats-officedocument.presentationml.template.main+xml":
            "application/vnd.openxmlformats-officedocument.presentationml.template",
        "application/vnd.ms-powerpoint.template.macroEnabled.main+xml":
            "application/vnd.ms-powerpoint.template.macroEnabled.12",
    },
    "xl/workbook.xml": {
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml": XLSX,
        "application/vnd.ms-excel.sheet.macroEnabled.main+xml": XLSM,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.template.main+xml": XLTX,
        "application/vnd.ms-excel.template.macroEnabled.main+xml": XLTM,
    },
    "xl/workbook.bin": {
        "application/vnd.ms-excel.sheet.binary.macroEnabled.main":
            "application/vnd.ms-excel.sheet.binary.macroEnabled.12",
    },
}
_HEAD_BYTES = 8192
# PDF readers accept "%PDF-" anywhere in the first 1024 bytes (junk before it is common).
_PDF_WINDOW = 1024


def detect(path: str | os.PathLike) -> str:
    """Return the MIME type of the file at ``path``, content first, extension second.

    Never raises for content reasons; raises ``ExtractionError("corrupt")`` only when
    the file cannot be read at all. Unrecognised binary content is
    ``application/octet-stream``; a zero-byte file is ``application/x-empty``.
    """
    p = Path(path)
    ext = p.suffix.lower()
    try:
        with open(p, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError as exc:
        raise ExtractionError("corrupt", f"cannot read file: {exc}") from exc
    if not head:
        return EMPTY
    textual = _looks_like_text(head)
    if head.startswith(b"%PDF-") or (
        b"%PDF-" in head[:_PDF_WINDOW] and not (textual and ext in _TEXT_EXTENSIONS)
    ):
        return PDF
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _sniff_zip(p)
    if head.startswith(_OLE2_MAGIC):
        if _is_encrypted_ooxml(p):
            return ENCRYPTED_OOXML
        return _OLE2_BY_EXT.get(ext, OLE2)
    plain_text_name = textual and (ext in _TEXT_EXTENSIONS or not ext)
    for magic, mime, strong in _MAGIC:
        if head.startswith(magic) and (strong or not plain_text_name):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"

    # No magic: a text format, named by its extension.
    if ext in _TEXT_EXTENSIONS:
        return _TEXT_EXTENSIONS[ext]
    if ext in _BINARY_EXTENSIONS:
        # Claims to be PDF/Office but lacks the signature: report the claim, the
        # parser will fail on it and say why (-> "corrupt").
        return _BINARY_EXTENSIONS[ext]
    if textual:
        lowered = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
        if lowered.startswith((b"<!doctype html", b"<html")):
            return HTML
        if not ext:
            if _looks_like_email(head):
                return EMAIL
            return TEXT
        guessed, _ = mimetypes.guess_type(p.name)
        return guessed or "text/x-unknown"
    guessed, _ = mimetypes.guess_type(p.name)
    return guessed if guessed and not guessed.startswith("text/") else OCTET


def _sniff_zip(p: Path) -> str:
    """OOXML flavour from the main part's content type; ODF/EPUB from ``mimetype``."""
    try:
        with zipfile.ZipFile(p) as zf:
            names = set(zf.namelist())
            for part, flavours in _OOXML_MAIN_PARTS.items():
                if part in names:
                    declared = None
                    if "[Content_Types].xml" in names:
                        declared = _declared_content_type(zf, part)
                    return flavours.get(declared, next(iter(flavours.values())))
            if "mimetype" in names:  # ODF (odt/ods/odp), EPUB: first entry, stored
                with zf.open("mimetype") as fh:
                    declared = fh.read(100).decode("ascii", "replace").strip()
                if declared:
                    return declared
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError, KeyError):
        # A damaged container: if the name claims an OOXML format, let that parser
        # report the damage; otherwise it is just a (broken) ZIP.
        return _BINARY_EXTENSIONS.get(p.suffix.lower(), ZIP)
    return ZIP


def _declared_content_type(zf: zipfile.ZipFile, part: str) -> str | None:
    import re

    info = zf.getinfo("[Content_Types].xml")
    if info.file_size > 1 << 20:  # a real one is a few KiB
        return None
    xml = zf.read(info).decode("utf-8", "replace")
    for match in re.finditer(r"<Override\b[^>]*>", xml):
        tag = match.group(0)
        name = re.search(r'PartName="([^"]*)"', tag)
        ctype = re.search(r'ContentType="([^"]*)"', tag)
        if name and ctype and name.group(1).lstrip("/").lower() == part:
            return ctype.group(1)
    return None


def _is_encrypted_ooxml(p: Path) -> bool:
    """True if an OLE2 file holds an ``EncryptedPackage`` stream (password-protected OOXML).

    Looks for the UTF-16LE directory entry name; reads in 1 MiB blocks (overlapping)
    so large legacy files cost only I/O.
    """
    needle = "EncryptedPackage".encode("utf-16-le")
    overlap = len(needle) - 1
    tail = b""
    with open(p, "rb") as fh:
        while block := fh.read(1 << 20):
            if needle in tail + block:
                return True
            tail = block[-overlap:]
    return False


def _looks_like_text(head: bytes) -> bool:
    if head.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf")):
        return True
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is still text.
        if exc.start >= len(head) - 3:
            return True
    try:
        decoded = head.decode("cp1252")
    except UnicodeDecodeError:
        return False
    printable = sum(ch.isprintable() or ch in "\r\n\t\f" for ch in decoded)
    return printable / max(len(decoded), 1) > 0.95


_EMAIL_HEADERS = (b"received:", b"return-path:", b"from:", b"mime-version:", b"message-id:",
                  b"delivered-to:", b"date:", b"subject:", b"to:", b"x-")


def _looks_like_email(head: bytes) -> bool:
    lines = head.splitlines()[:8]
    header_like = sum(1 for line in lines if line.lower().startswith(_EMAIL_HEADERS))
    return header_like >= 3


def extract(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES,
            ctx: ExtractContext | None = None) -> Extraction:
    """Extract the elements of one file. Raises only ``ExtractionError``.

    Codes: ``empty-file`` (zero bytes), ``too-large`` (over ``max_bytes``),
    ``unsupported-type`` (with the detected MIME type), ``encrypted`` (needs a
    password), ``corrupt`` (the parser failed; message names format and failure),
    ``extractor-crash`` (a parsing dependency is missing or misconfigured).
    A file that parses but holds no text returns an ``Extraction`` with no elements
    and a warning; the pipeline decides what to do with it.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise ExtractionError("corrupt", f"cannot read file: {exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ExtractionError("unsupported-type", f"{p.name}: not a regular file")
    if st.st_size == 0:
        raise ExtractionError("empty-file", f"{p.name}: file is empty (0 bytes)")
    if st.st_size > max_bytes:
        raise ExtractionError(
            "too-large", f"{p.name}: {st.st_size} bytes is over the limit of {max_bytes} bytes"
        )

    mime = detect(p)
    if mime == EMPTY:  # emptied between stat() and read
        raise ExtractionError("empty-file", f"{p.name}: file is empty (0 bytes)")
    if mime == ENCRYPTED_OOXML:
        raise ExtractionError(
            "encrypted", f"{p.name}: password-protected Office document (password required)"
        )
    if mime not in SUPPORTED_MIMES:
        raise ExtractionError(
            "unsupported-type",
            f"{p.name}: detected as {mime}; supported: PDF, DOCX, PPTX, XLSX, Markdown, "
            f"HTML, plain text, CSV, EML",
        )
    return _run(p, mime, ctx or ExtractContext())


# format family -> (module in this package, function(path, mime, ctx) -> Extraction)
_EXTRACTORS: dict[str, tuple[str, str]] = {
    "pdf": ("pdf", "extract"),
    "docx": ("docx", "extract"),
    "md": ("unstructured_family", "extract"),
    "html": ("unstructured_family", "extract"),
    "txt": ("unstructured_family", "extract"),
    "csv": ("unstructured_family", "extract"),
    "eml": ("unstructured_family", "extract"),
    "pptx": ("unstructured_family", "extract"),
    "xlsx": ("unstructured_family", "extract"),
}


def _run(p: Path, mime: str, ctx: ExtractContext) -> Extraction:
    import importlib

    fmt = _FAMILY[mime]
    try:
        module, function = _EXTRACTORS[fmt]
        fn = getattr(importlib.import_module(f".{module}", __name__), function)
        return fn(p, mime, ctx)
    except ExtractionError:
        raise
    except ImportError as exc:
        raise ExtractionError(
            "extractor-crash", f"{fmt}: parsing library not importable: {exc}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - the contract: nothing else escapes
        raise ExtractionError("corrupt", f"{fmt}: {_describe(exc)}") from exc


def warm_up() -> None:
    """Import every parser and load unstructured's spaCy model now (a worker calls this
    at start, so the first document a user drops in is not the one that pays for it)."""
    import importlib

    from . import docx, pdf, spacy_shim, unstructured_family  # noqa: F401

    spacy_shim.install()
    for module, _, _ in unstructured_family._PARTITIONERS.values():
        importlib.import_module(module)
    from unstructured.nlp.tokenize import _get_nlp

    _get_nlp()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or "(no message)"
    if len(text) > 300:
        text = text[:300] + "..."
    return f"{type(exc).__name__}: {text}"
