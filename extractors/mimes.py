"""MIME types the extractors name, and the file extensions that stand for them.

Constants only (no imports): ``extractors.detect`` names files with them,
``extractors.registry`` maps them to format families.
"""
from __future__ import annotations

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
# OpenDocument (ODF) and EPUB: ZIP containers whose first member "mimetype" says which.
ODT = "application/vnd.oasis.opendocument.text"
OTT = "application/vnd.oasis.opendocument.text-template"
ODS = "application/vnd.oasis.opendocument.spreadsheet"
OTS = "application/vnd.oasis.opendocument.spreadsheet-template"
ODP = "application/vnd.oasis.opendocument.presentation"
OTP = "application/vnd.oasis.opendocument.presentation-template"
EPUB = "application/epub+zip"
# OpenOffice.org 1.x (the ODF's predecessor, same structure under other namespaces).
SXW = "application/vnd.sun.xml.writer"
SXC = "application/vnd.sun.xml.calc"
SXI = "application/vnd.sun.xml.impress"
# Legacy (OLE2 / Compound File) Office and Outlook.
DOC = "application/msword"
XLS = "application/vnd.ms-excel"
PPT = "application/vnd.ms-powerpoint"
MSG = "application/vnd.ms-outlook"
OLE2 = "application/x-ole-storage"
# An encrypted OOXML file is an OLE2 container holding "EncryptionInfo" and
# "EncryptedPackage" streams (MS-OFFCRYPTO). There is no registered MIME type for it.
ENCRYPTED_OOXML = "application/x-ooxml-encrypted"
# Office file protected by Information Rights Management (an OLE2 container whose
# \x06DataSpaces name a DRM transform); it cannot be opened without the rights server.
IRM_PROTECTED = "application/x-irm-protected"
# Text formats.
MARKDOWN = "text/markdown"
HTML = "text/html"
TEXT = "text/plain"
CSV = "text/csv"
TSV = "text/tab-separated-values"
RTF = "application/rtf"
JSON = "application/json"
NDJSON = "application/x-ndjson"
XML = "application/xml"
EMAIL = "message/rfc822"
# Images (OCR).
PNG = "image/png"
JPEG = "image/jpeg"
TIFF = "image/tiff"
BMP = "image/bmp"
GIF = "image/gif"
WEBP = "image/webp"
# Archives.
ZIP = "application/zip"
TAR = "application/x-tar"
GZIP = "application/gzip"
BZIP2 = "application/x-bzip2"
XZ = "application/x-xz"
SEVEN_Z = "application/x-7z-compressed"
TAR_GZ = "application/x-compressed-tar"
TAR_BZ2 = "application/x-bzip-compressed-tar"
TAR_XZ = "application/x-xz-compressed-tar"

EMPTY = "application/x-empty"
OCTET = "application/octet-stream"

# extension -> MIME for the text formats (no magic: routed by name when content does
# not say more).
TEXT_EXTENSIONS = {
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".html": HTML,
    ".htm": HTML,
    ".xhtml": HTML,
    ".txt": TEXT,
    ".text": TEXT,
    ".log": TEXT,
    ".rst": TEXT,
    ".org": TEXT,
    ".yaml": TEXT,
    ".yml": TEXT,
    ".csv": CSV,
    ".tsv": TSV,
    ".tab": TSV,
    ".eml": EMAIL,
    ".json": JSON,
    ".ndjson": NDJSON,
    ".jsonl": NDJSON,
    ".xml": XML,
    ".rtf": RTF,
}
# extension -> MIME for binary formats: only used when the content has no signature
# at all (the claimed parser then reports the damage as "corrupt") or when a container
# is too damaged to look into.
BINARY_EXTENSIONS = {
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
    ".odt": ODT,
    ".ott": OTT,
    ".ods": ODS,
    ".ots": OTS,
    ".odp": ODP,
    ".otp": OTP,
    ".epub": EPUB,
    ".sxw": SXW,
    ".sxc": SXC,
    ".sxi": SXI,
}
# Names of formats recognised by signature (listed in SUPPORTED_EXTENSIONS; the name
# alone never routes them).
SIGNED_EXTENSIONS = {
    ".doc": DOC, ".dot": DOC, ".xls": XLS, ".xlt": XLS, ".ppt": PPT, ".pps": PPT,
    ".pot": PPT, ".msg": MSG,
    ".png": PNG, ".jpg": JPEG, ".jpeg": JPEG, ".jpe": JPEG, ".tif": TIFF, ".tiff": TIFF,
    ".bmp": BMP, ".gif": GIF, ".webp": WEBP,
    ".zip": ZIP, ".tar": TAR, ".gz": GZIP, ".tgz": TAR_GZ, ".bz2": BZIP2, ".tbz2": TAR_BZ2,
    ".tbz": TAR_BZ2, ".xz": XZ, ".txz": TAR_XZ, ".7z": SEVEN_Z,
}
