"""The router: ``extract(path) -> Extraction``. Checks the file (regular, not empty, not
over ``max_bytes``), names its format by content (``extractors.detect``), opens
password-protected Office files with the configured passwords (``extractors.decrypt``)
and parses it with its family's module (``extractors.registry``).

Every failure leaves as ``ExtractionError`` with a code from ``extractors.base``;
parser exceptions become ``corrupt`` with the format and what failed.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .base import ExtractContext, Extraction, ExtractionError
from .decrypt import OFFICE_CRYPTO, decrypt_office
from .errors import ErrorCode
from .detect import detect_file
from .mimes import EMPTY
from .registry import SUPPORTED_MIMES, run, supported_summary

DEFAULT_MAX_BYTES = 200 * 1024 * 1024


def extract(path: str | os.PathLike, *, max_bytes: int = DEFAULT_MAX_BYTES,
            ctx: ExtractContext | None = None) -> Extraction:
    """Extract the elements of one file. Raises only ``ExtractionError``.

    Codes: ``empty-file`` (zero bytes), ``too-large`` (over ``max_bytes``),
    ``unsupported-type`` (with the detected MIME type and what is supported),
    ``encrypted`` (needs a password, or the configured ones do not fit),
    ``irm-protected`` (rights-managed Office file),
    ``corrupt`` (the parser failed; message names format and failure),
    ``extractor-crash`` (a parsing module or dependency is missing or misconfigured),
    and the codes a format module raises itself (see ``extractors.base``).
    A file that parses but holds no text returns an ``Extraction`` with no elements
    and a warning; the pipeline decides what to do with it.
    """
    p = Path(path)
    try:
        st = p.stat()
    except OSError as exc:
        raise ExtractionError(ErrorCode.CORRUPT, f"cannot read file: {exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ExtractionError(ErrorCode.UNSUPPORTED_TYPE, f"{p.name}: not a regular file")
    if st.st_size == 0:
        raise ExtractionError(ErrorCode.EMPTY_FILE, f"{p.name}: file is empty (0 bytes)")
    if st.st_size > max_bytes:
        raise ExtractionError(
            ErrorCode.TOO_LARGE, f"{p.name}: {st.st_size} bytes is over the limit of {max_bytes} bytes"
        )

    found = detect_file(p)
    mime = found.mime
    if mime == EMPTY:  # emptied between stat() and read
        raise ExtractionError(ErrorCode.EMPTY_FILE, f"{p.name}: file is empty (0 bytes)")
    ctx = ctx or ExtractContext()
    if found.refusal is not None:
        if found.refusal[0] == ErrorCode.ENCRYPTED and mime in OFFICE_CRYPTO:
            return decrypt_office(p, found, ctx)
        raise ExtractionError(*found.refusal)
    if mime not in SUPPORTED_MIMES:
        raise ExtractionError(
            ErrorCode.UNSUPPORTED_TYPE,
            f"{p.name}: detected as {mime}; supported: {supported_summary()}",
        )
    return run(p, mime, ctx)
