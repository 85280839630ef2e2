"""Password-protected Office files: OOXML in an OLE ``EncryptedPackage``, and
.doc/.xls/.ppt with RC4/CryptoAPI encryption, are decrypted with the passwords
configured for their path (``ExtractContext.passwords``, via ``msoffcrypto-tool``) into a
temporary file that is extracted and deleted; without a configured password they are
``encrypted: ... (password required)``, with only wrong ones ``encrypted: configured
password did not open it``. IRM/DRM-protected Office files are ``irm-protected``
(refused by ``extractors.detect``). ODF and PDF handle their own passwords in their
modules.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from .base import ExtractContext, Extraction, ExtractionError
from .detect import Detected, detect_file
from .errors import ErrorCode
from .mimes import (
    DOC, DOCM, DOCX, DOTM, DOTX, ENCRYPTED_OOXML, PPT, PPTM, PPTX, XLS, XLSM, XLSX, XLTM,
    XLTX,
)
from .registry import SUPPORTED_MIMES, run

# Password-protected Office files that msoffcrypto-tool can decrypt (OOXML in an OLE
# "EncryptedPackage": ECMA-376 standard and agile encryption; .doc/.xls/.ppt RC4/CryptoAPI).
OFFICE_CRYPTO = {ENCRYPTED_OOXML, DOC, XLS, PPT}
_SUFFIX_FOR = {DOCX: ".docx", DOCM: ".docm", DOTX: ".dotx", DOTM: ".dotm", PPTX: ".pptx",
               PPTM: ".pptm", XLSX: ".xlsx", XLSM: ".xlsm", XLTX: ".xltx", XLTM: ".xltm",
               DOC: ".doc", XLS: ".xls", PPT: ".ppt"}


def decrypt_office(p: Path, found: Detected, ctx: ExtractContext) -> Extraction:
    """Open a password-protected Office file with the passwords configured for its path
    (``ctx.passwords_for``): decrypt to a private temporary file and extract that.
    None configured -> ``encrypted: ... password required``; none fits ->
    ``encrypted: configured password did not open it``."""
    passwords = ctx.passwords_for(p)
    if not passwords:
        raise ExtractionError(*found.refusal)
    try:
        import msoffcrypto
    except ImportError as exc:
        raise ExtractionError(
            ErrorCode.ENCRYPTED, f"{p.name}: password-protected Office document; decrypting needs "
            f"msoffcrypto-tool, which is not installed ({exc})") from exc
    plain = None
    for password in passwords:
        try:
            with open(p, "rb") as fh:
                office = msoffcrypto.OfficeFile(fh)
                office.load_key(password=password)
                out = io.BytesIO()
                office.decrypt(out)
            plain = out.getvalue()
            break
        except Exception:  # noqa: BLE001 - wrong password or unsupported scheme: next one
            continue
    if plain is None:
        raise ExtractionError(ErrorCode.ENCRYPTED, f"{p.name}: configured password did not open it")
    directory = Path(ctx.workdir) if ctx.workdir else None
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="decrypted-", dir=directory)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(plain)
        inner = detect_file(tmp)
        suffix = _SUFFIX_FOR.get(inner.mime, "")
        if suffix:  # converters (LibreOffice) go by the name
            named = tmp.with_name(tmp.name + suffix)
            tmp.rename(named)
            tmp = named
        if inner.mime not in SUPPORTED_MIMES:
            raise ExtractionError(
                ErrorCode.CORRUPT, f"{p.name}: decrypted content is {inner.mime}, not an Office document")
        result = run(tmp, inner.mime, ctx)
    finally:
        tmp.unlink(missing_ok=True)
    result.warnings.append("decrypted with a configured password")
    return result
