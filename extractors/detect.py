"""Name a file's format from its content: ``detect(path) -> MIME type``.

Detection trusts content over names; the extension only breaks ties:

1. ``%PDF-`` in the first 1 KiB (unless the file is text named as text).
2. ZIP containers by what they hold: the OOXML main part and its declared content type
   (DOCX/PPTX/XLSX and their macro/template variants); a ``mimetype`` member (ODF text,
   spreadsheet, presentation; EPUB); ``META-INF/container.xml`` (EPUB without
   ``mimetype``); anything else is a plain ZIP archive.
3. OLE2 (Compound File) containers by their streams (``olefile``): ``WordDocument``
   (.doc), ``Workbook``/``Book`` (.xls), ``PowerPoint Document`` (.ppt),
   ``__substg1.0_*`` (Outlook .msg), ``EncryptedPackage`` (password-protected OOXML),
   ``\\x06DataSpaces`` with a DRM transform or ``\\tDRMContent`` (IRM-protected Office).
4. Magic numbers: RTF, images (PNG, JPEG, TIFF, BMP, GIF, WebP), gzip, bzip2, xz, 7z,
   TAR (``ustar`` at offset 257), executables and other formats we only name to refuse.
5. Text without magic: JSON / NDJSON / XML / HTML by content (extension as tie-break),
   then the extension (Markdown, CSV, TSV, plain text, ...); a file without extension
   whose first lines are mail headers is an email.
6. libmagic (``python-magic``) as a second opinion for binary content none of the above
   recognised; its answer names the type in the "unsupported" message.

So a PDF saved as ``report.docx`` is parsed as PDF, and a ``.doc`` that is really a
``.docx`` is parsed as DOCX.
"""
from __future__ import annotations

import mimetypes
import os
import re
import struct
import zipfile
from pathlib import Path

from .base import ExtractionError
from .errors import ErrorCode
from .mimes import (
    BINARY_EXTENSIONS, BMP, BZIP2, DOC, DOCM, DOCX, DOTM, DOTX, EMAIL, EMPTY,
    ENCRYPTED_OOXML, EPUB, GIF, GZIP, HTML, IRM_PROTECTED, JPEG, JSON, MSG, NDJSON, OCTET,
    OLE2, PDF, PNG, PPT, PPTM, PPTX, RTF, SEVEN_Z, TAR, TAR_BZ2, TAR_GZ, TAR_XZ, TEXT,
    TEXT_EXTENSIONS, TIFF, WEBP, XLS, XLSM, XLSX, XLTM, XLTX, XML, XZ, ZIP,
)
from .registry import FAMILY

# (magic prefix, MIME, strong). A weak (short) magic is ignored when the file is text
# with a text extension (or none): "BMW sales.txt" must not become a bitmap, nor
# "MZ..." notes an executable.
_MAGIC = [
    (b"MZ", "application/x-msdownload", False),
    (b"\x7fELF", "application/x-executable", True),
    (b"\xcf\xfa\xed\xfe", "application/x-mach-binary", True),
    (b"\xfe\xed\xfa\xcf", "application/x-mach-binary", True),
    (b"\xca\xfe\xba\xbe", "application/java-vm", True),
    (b"\x89PNG\r\n\x1a\n", PNG, True),
    (b"\xff\xd8\xff", JPEG, True),
    (b"GIF87a", GIF, True),
    (b"GIF89a", GIF, True),
    (b"II*\x00", TIFF, True),
    (b"MM\x00*", TIFF, True),
    (b"7z\xbc\xaf\x27\x1c", SEVEN_Z, True),
    (b"Rar!\x1a\x07", "application/vnd.rar", True),
    (b"{\\rtf", RTF, True),
    (b"ID3", "audio/mpeg", False),
    (b"OggS", "audio/ogg", False),
    (b"fLaC", "audio/flac", False),
    (b"%!PS", "application/postscript", False),
    (b"!<arch>\n", "application/x-archive", True),
    (b"SQLite format 3\x00", "application/vnd.sqlite3", True),
    (b"-----BEGIN PGP MESSAGE-----", "application/pgp-encrypted", True),
    (b"!BDN", "application/vnd.ms-outlook-pst", True),  # Outlook PST/OST mail store
]
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_OLE2_BY_EXT = {
    ".doc": DOC, ".dot": DOC, ".xls": XLS, ".xlt": XLS, ".ppt": PPT, ".pps": PPT,
    ".pot": PPT, ".msg": MSG,
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
# Other OPC (Open Packaging) containers: named, so they are refused by name instead
# of being unpacked as a plain ZIP of XML parts.
_OPC_PARTS = {
    "visio/document.xml": "application/vnd.ms-visio.drawing",
    "FixedDocumentSequence.fdseq": "application/vnd.ms-xpsdocument",
    "FixedDocSeq.fdseq": "application/vnd.ms-xpsdocument",
}
_HEAD_BYTES = 8192
# PDF readers accept "%PDF-" anywhere in the first 1024 bytes (junk before it is common).
_PDF_WINDOW = 1024


class Detected:
    """What detection found: the MIME type, and for a file that cannot be opened as
    it is, the refusal (code, message) ``extract`` raises."""

    __slots__ = ("mime", "refusal")

    def __init__(self, mime: str, refusal: tuple[str, str] | None = None):
        self.mime = mime
        self.refusal = refusal


def detect(path: str | os.PathLike) -> str:
    """Return the MIME type of the file at ``path``, content first, extension second.

    Never raises for content reasons; raises ``ExtractionError(ErrorCode.CORRUPT)`` only when
    the file cannot be read at all. Unrecognised binary content is libmagic's answer
    or ``application/octet-stream``; a zero-byte file is ``application/x-empty``.
    """
    return detect_file(Path(path)).mime


def detect_file(p: Path) -> Detected:
    """What ``detect`` finds, with the refusal for a file that cannot be opened as it is
    (encrypted, IRM-protected); ``extractors.router.extract`` raises that refusal."""
    ext = p.suffix.lower()
    try:
        with open(p, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError as exc:
        raise ExtractionError(ErrorCode.CORRUPT, f"cannot read file: {exc}") from exc
    if not head:
        return Detected(EMPTY)
    textual = _looks_like_text(head)
    if head.startswith(b"%PDF-") or (
        b"%PDF-" in head[:_PDF_WINDOW] and not (textual and ext in TEXT_EXTENSIONS)
    ):
        return Detected(PDF)
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return Detected(_sniff_zip(p))
    if head.startswith(_OLE2_MAGIC):
        return _sniff_ole(p, ext)
    plain_text_name = textual and (ext in TEXT_EXTENSIONS or not ext)
    for magic, mime, strong in _MAGIC:
        if head.startswith(magic) and (strong or not plain_text_name):
            return Detected(mime)
    signed = _sniff_signatures(head, p, ext, plain_text_name)
    if signed:
        return Detected(signed)

    if textual:
        return Detected(_sniff_text(head, p, ext))
    # Binary without a signature we know.
    if ext in BINARY_EXTENSIONS:
        # Claims to be PDF/Office but lacks the signature: report the claim, the
        # parser will fail on it and say why (-> "corrupt").
        return Detected(BINARY_EXTENSIONS[ext])
    second = _libmagic(head)
    if second:
        return Detected(second)
    if ext in TEXT_EXTENSIONS:  # binary junk named as text: let the text path judge
        return Detected(TEXT_EXTENSIONS[ext])
    guessed, _ = mimetypes.guess_type(p.name)
    return Detected(guessed if guessed and not guessed.startswith("text/") else OCTET)


def _sniff_signatures(head: bytes, p: Path, ext: str, plain_text_name: bool) -> str | None:
    """Signatures that need more than a prefix test."""
    if head[:3] == b"BZh" and len(head) >= 10 and head[3:4].isdigit() and head[3:4] != b"0" \
            and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
        return _compressed_tar(p, BZIP2)
    if head[:2] == b"\x1f\x8b":
        return _compressed_tar(p, GZIP)
    if head[:4] == b"\xfd7zX":
        return _compressed_tar(p, XZ)
    if len(head) >= 262 and head[257:262] == b"ustar":
        return TAR
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if _is_bmp(head, p):
        return BMP
    # BIFF2-4 Excel worksheets (pre-OLE): a BOF record. Too short to trust alone.
    if ext in (".xls", ".xlw") and head[:2] in (b"\x09\x00", b"\x09\x02", b"\x09\x04") \
            and head[3:4] == b"\x00":
        return XLS
    return None


def _is_bmp(head: bytes, p: Path) -> bool:
    """"BM" plus a plausible header (size field, reserved zeros, DIB header size)."""
    if head[:2] != b"BM" or len(head) < 18:
        return False
    size, reserved, _offset, dib = struct.unpack("<IIII", head[2:18])
    try:
        real = p.stat().st_size
    except OSError:
        return False
    return reserved == 0 and dib in (12, 16, 40, 52, 56, 64, 108, 124) and size in (0, real)


def _compressed_tar(p: Path, mime: str) -> str:
    """A compressed stream whose first 512 decompressed bytes are a TAR header is a
    compressed tarball (decompresses at most a few KiB: a bomb or quine costs nothing)."""
    import bz2
    import gzip
    import lzma

    opener = {GZIP: gzip.open, BZIP2: bz2.open, XZ: lzma.open}[mime]
    try:
        with opener(p, "rb") as fh:
            block = fh.read(512)
    except Exception:  # noqa: BLE001 - damaged stream: the archive extractor says why
        return mime
    if len(block) >= 262 and block[257:262] == b"ustar":
        return {GZIP: TAR_GZ, BZIP2: TAR_BZ2, XZ: TAR_XZ}[mime]
    return mime


def _sniff_zip(p: Path) -> str:
    """OOXML flavour from the main part's content type; ODF/EPUB from ``mimetype``."""
    ext = p.suffix.lower()
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
                info = zf.getinfo("mimetype")
                if info.file_size <= 200:
                    declared = zf.read(info).decode("ascii", "replace").strip()
                    if declared and re.fullmatch(r"[\w.+-]+/[\w.+-]+", declared):
                        return declared
            if "content.xml" in names and "META-INF/manifest.xml" in names:
                declared = _manifest_media_type(zf)  # ODF without "mimetype"; OOo 1.x
                if declared:
                    return declared
            if "META-INF/container.xml" in names and any(n.endswith(".opf") for n in names):
                return EPUB
            if "[Content_Types].xml" in names:
                for part, mime in _OPC_PARTS.items():
                    if part in names:
                        return mime
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError,
            KeyError, NotImplementedError, RuntimeError):
        # A damaged container: if the name claims a ZIP-based format, let that parser
        # report the damage; otherwise it is just a (broken) ZIP.
        return BINARY_EXTENSIONS.get(ext, ZIP)
    return ZIP


def _manifest_media_type(zf: zipfile.ZipFile) -> str | None:
    info = zf.getinfo("META-INF/manifest.xml")
    if info.file_size > 1 << 20:
        return None
    xml = zf.read(info).decode("utf-8", "replace")
    for match in re.finditer(r"<manifest:file-entry\b[^>]*>", xml):
        tag = match.group(0)
        if re.search(r'full-path="/"', tag):
            media = re.search(r'media-type="([^"]+)"', tag)
            return media.group(1) if media else None
    return None


def _declared_content_type(zf: zipfile.ZipFile, part: str) -> str | None:
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


# ----------------------------------------------------------------------------- OLE2


def _sniff_ole(p: Path, ext: str) -> Detected:
    """Name an OLE2 (Compound File) container by its streams."""
    try:
        import olefile

        with olefile.OleFileIO(str(p)) as ole:
            entries = ole.listdir(streams=True, storages=True)
            top = {e[0] for e in entries}
            if _is_irm(entries):
                return Detected(IRM_PROTECTED, (
                    ErrorCode.IRM_PROTECTED,
                    f"{p.name}: Office document protected by Information Rights Management "
                    "(IRM/DRM); it can only be opened through the rights server",
                ))
            if "EncryptedPackage" in top:
                return Detected(ENCRYPTED_OOXML, _encrypted_ooxml_refusal(p))
            if "WordDocument" in top:
                return Detected(DOC, _legacy_encryption(ole, p, "WordDocument"))
            if "Workbook" in top or "Book" in top:
                stream = "Workbook" if "Workbook" in top else "Book"
                return Detected(XLS, _legacy_encryption(ole, p, stream))
            if "PowerPoint Document" in top:
                refusal = None
                if "EncryptedSummary" in top or _ppt_encrypted_token(ole, top):
                    refusal = (ErrorCode.ENCRYPTED, f"{p.name}: password-protected PowerPoint "
                               "97-2003 presentation (password required)")
                return Detected(PPT, refusal)
            if any(name.startswith("__substg1.0_") for name in top):
                return Detected(MSG)
            if "VisioDocument" in top:
                return Detected("application/vnd.visio")
            if "Quill" in top:
                return Detected("application/x-mspublisher")
            return Detected(OLE2)
    except Exception:  # noqa: BLE001 - unreadable directory: fall back on bytes and name
        if _is_encrypted_ooxml(p):
            return Detected(ENCRYPTED_OOXML, _encrypted_ooxml_refusal(p))
        return Detected(_OLE2_BY_EXT.get(ext, OLE2))


def _is_irm(entries: list[list[str]]) -> bool:
    for entry in entries:
        if entry[0] == "\tDRMContent":
            return True
        if entry[0] == "\x06DataSpaces" and any("DRM" in part for part in entry[1:]):
            return True
    return False


def _encrypted_ooxml_refusal(p: Path) -> tuple[str, str]:
    return ErrorCode.ENCRYPTED, f"{p.name}: password-protected Office document (password required)"


def _legacy_encryption(ole, p: Path, stream: str) -> tuple[str, str] | None:
    """Password-protected .doc (FIB fEncrypted / fObfuscated) or .xls (FILEPASS record)."""
    try:
        with ole.openstream(stream) as fh:
            data = fh.read(64 * 1024)
    except Exception:  # noqa: BLE001 - the parser will report the damage
        return None
    if stream == "WordDocument":
        if len(data) >= 12 and data[:2] == b"\xec\xa5":
            (flags,) = struct.unpack_from("<H", data, 10)
            if flags & 0x0100 or flags & 0x8000:  # fEncrypted, fObfuscated
                return (ErrorCode.ENCRYPTED, f"{p.name}: password-protected Word 97-2003 document "
                        "(password required)")
        return None
    # BIFF: walk records from the start; FILEPASS (0x002F) comes right after BOF.
    pos = 0
    for _ in range(64):
        if pos + 4 > len(data):
            break
        rtype, size = struct.unpack_from("<HH", data, pos)
        if rtype == 0x002F:
            return (ErrorCode.ENCRYPTED, f"{p.name}: password-protected Excel 97-2003 workbook "
                    "(password required)")
        if rtype in (0x0085, 0x000A) and pos > 0:  # BOUNDSHEET or EOF: no FILEPASS
            break
        pos += 4 + size
    return None


def _ppt_encrypted_token(ole, top: set[str]) -> bool:
    """CurrentUserAtom.headerToken 0xF3D1C4DF marks an encrypted presentation."""
    if "Current User" not in top:
        return False
    try:
        with ole.openstream("Current User") as fh:
            data = fh.read(16)
    except Exception:  # noqa: BLE001
        return False
    return len(data) >= 16 and struct.unpack_from("<I", data, 12)[0] == 0xF3D1C4DF


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


# ----------------------------------------------------------------------------- text


def _sniff_text(head: bytes, p: Path, ext: str) -> str:
    complete = p.stat().st_size <= len(head)
    structured = _sniff_structured(head, ext, complete)
    if structured:
        return structured
    if ext in TEXT_EXTENSIONS:
        return TEXT_EXTENSIONS[ext]
    if ext in BINARY_EXTENSIONS:
        # A text file named as PDF/Office: the claimed parser says why it is not.
        return BINARY_EXTENSIONS[ext]
    if not ext:
        if _looks_like_email(head):
            return EMAIL
        return TEXT
    guessed, _ = mimetypes.guess_type(p.name)
    if guessed in FAMILY or (guessed or "").startswith("text/"):
        return guessed
    if guessed and _decode_head(head).lstrip().startswith("-----BEGIN PGP"):
        return guessed  # a real key or signature (.asc): no document
    # text under a name that means nothing here (.bms) or another type (.asc without
    # PGP armour): the bytes are text, so it is read as text, like the same file as .txt
    return TEXT


def _decode_head(head: bytes) -> str:
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe\x00\x00", "utf-32-le"),
                       (b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xff\xfe", "utf-16-le"),
                       (b"\xfe\xff", "utf-16-be")):
        if head.startswith(bom):
            return head[len(bom):].decode(codec, "ignore")
    wide = bomless_utf16(head)
    if wide:
        return head.decode(wide, "ignore")
    return head.decode("utf-8", "ignore")


def _sniff_structured(head: bytes, ext: str, complete: bool) -> str | None:
    """JSON / NDJSON / XML / HTML by content; the extension breaks ties."""
    import json

    text = _decode_head(head).lstrip("\ufeff \t\r\n")
    if not text:
        return None
    lowered = text[:1000].lower()
    if text.startswith("<"):
        if lowered.startswith(("<!doctype html", "<html")) or re.match(
            r"<\?xml[^>]*\?>\s*(<!--.*?-->\s*)*(<!doctype html|<html)", lowered, re.S
        ):
            return HTML
        if lowered.startswith("<?xml"):
            return XML
        if ext in (".xml", ".xsl", ".xslt", ".rdf", ".kml", ".svg", ".xsd", ".gpx", ".opf"):
            return XML
        return None
    if text[0] not in "{[":
        return None
    if ext in (".ndjson", ".jsonl"):
        return NDJSON
    if complete:
        try:
            json.loads(text)
            return JSON
        except (ValueError, RecursionError):
            pass
    # NDJSON: every complete line of the sample is a JSON value, and there are two or more.
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not complete and lines:
        lines = lines[:-1]  # the last line of a sample may be cut
    if len(lines) >= 2:
        try:
            for line in lines:
                json.loads(line)
            return NDJSON
        except (ValueError, RecursionError):
            pass
    if ext == ".json":
        return JSON
    return None


def bomless_utf16(head: bytes) -> str | None:
    """"utf-16-le"/"utf-16-be" for UTF-16 text without a BOM (mostly-ASCII text has a
    NUL in every other byte), else None."""
    sample = head[: len(head) // 2 * 2][:4096]
    if len(sample) < 8:
        return None
    even, odd = sample[0::2], sample[1::2]
    for zeros, other, codec in ((odd, even, "utf-16-le"), (even, odd, "utf-16-be")):
        if zeros.count(0) >= 0.4 * len(zeros) and other.count(0) <= 0.02 * len(other):
            try:
                decoded = sample.decode(codec)
            except UnicodeDecodeError:
                continue
            printable = sum(ch.isprintable() or ch in "\r\n\t\f" for ch in decoded)
            if printable >= 0.95 * len(decoded):
                return codec
    return None


def _looks_like_text(head: bytes) -> bool:
    if head.startswith((b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf", b"\x00\x00\xfe\xff")):
        return True
    if b"\x00" in head:
        return bomless_utf16(head) is not None
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
        decoded = head.decode("latin-1")
    printable = sum(ch.isprintable() or ch in "\r\n\t\f" for ch in decoded)
    return printable / max(len(decoded), 1) > 0.95


_EMAIL_HEADERS = (b"received:", b"return-path:", b"from:", b"mime-version:", b"message-id:",
                  b"delivered-to:", b"date:", b"subject:", b"to:", b"x-")


def _looks_like_email(head: bytes) -> bool:
    lines = head.splitlines()[:8]
    header_like = sum(1 for line in lines if line.lower().startswith(_EMAIL_HEADERS))
    return header_like >= 3


# ----------------------------------------------------------------------------- libmagic

# libmagic's names -> ours (aliases of formats we route, plus a few it spells its way).
_LIBMAGIC_ALIASES = {
    "image/x-ms-bmp": BMP,
    "image/x-bmp": BMP,
    "application/x-gzip": GZIP,
    "application/x-bzip2": BZIP2,
    "application/x-xz": XZ,
    "application/x-7z-compressed": SEVEN_Z,
    "application/x-tar": TAR,
    "application/x-gtar": TAR,
    "text/rtf": RTF,
    "application/x-ndjson": NDJSON,
    "application/vnd.ms-excel": XLS,
    "application/CDFV2": OLE2,
    "application/x-ole-storage": OLE2,
}


def _libmagic(head: bytes) -> str | None:
    """libmagic's MIME type for a sample we could not name, or None if it has none
    either (or libmagic is not installed)."""
    try:
        import magic
    except ImportError:  # python-magic or libmagic1 missing: our sniffing only
        return None
    try:
        mime = magic.from_buffer(head, mime=True)
    except Exception:  # noqa: BLE001 - libmagic failure is not the document's fault
        return None
    if not mime or mime in (OCTET, "application/x-empty") or mime.startswith("text/"):
        return None
    if mime == "application/msword":
        # libmagic says "msword" for MS Write and other pre-OLE Word formats that the
        # legacy converter may not read; name them apart.
        return "application/x-mswrite" if head[:2] in (b"1\xbe", b"2\xbe") else None
    return _LIBMAGIC_ALIASES.get(mime, mime)
