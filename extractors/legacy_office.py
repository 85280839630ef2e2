"""Legacy binary Office files (.doc, .xls, .ppt) through LibreOffice headless.

The file is converted to its OOXML sibling (.docx / .xlsx / .pptx) with
``soffice --headless --convert-to`` and the result is parsed by the existing
extractors (``docx`` for Word; ``unstructured_family`` for Excel and PowerPoint), so
a .doc gives the same elements (headings, lists, tables, headers/footers) as a .docx.
``Extraction.extractor`` says both steps, e.g. ``doc/libreoffice+python-docx``,
``xls/libreoffice+unstructured``; the version names LibreOffice's and the parser's.

* Kind by content: the OLE2 streams decide (``WordDocument`` -> doc, ``Workbook`` /
  ``Book`` -> xls, ``PowerPoint Document`` -> ppt); the MIME type only breaks ties.
* Password-encrypted files (RC4 / CryptoAPI, detected and decrypted with
  ``msoffcrypto-tool``): the passwords configured for the path
  (``ctx.passwords_for``) are tried; none configured -> ``encrypted: password
  required``; none works -> ``encrypted: configured password did not open it``.
  IRM/DRM-protected files (``\\x06DataSpaces`` with a DRM transform) ->
  ``irm-protected``.
* Each conversion runs in a private temp folder (under ``ctx.workdir`` when set) with
  its own throwaway LibreOffice user profile (``-env:UserInstallation``), so
  conversions never share state or lock each other out; the input is copied in
  under a generated name. LibreOffice runs with a wall-clock limit (``TIMEOUT_S``);
  on expiry its whole process tree is killed -> ``timeout``. It stays in the
  caller's process group, so the parse sandbox's group kill reaches it as well.
* No ``soffice`` -> ``missing-tool`` with the apt-get hint. LibreOffice failing to
  load the file -> ``corrupt``.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from . import docx as docx_ex, unstructured_family
from ._tools import run_tool
from .base import ExtractContext, Extraction, ExtractionError
from .errors import ErrorCode

OUR_VERSION = 1
TIMEOUT_S = 90  # below the parse sandbox's 120 s, so the reason names LibreOffice
APT_HINT = ("LibreOffice not installed: apt-get install libreoffice-writer-nogui "
            "libreoffice-calc-nogui libreoffice-impress-nogui")

DOC_MIME = "application/msword"
XLS_MIME = "application/vnd.ms-excel"
PPT_MIME = "application/vnd.ms-powerpoint"
DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX_MIME = "application/vnd.openxmlformats-officedocument.presentationml.presentation"

# kind -> (input extension, LibreOffice export filter, output extension, OOXML MIME)
_KINDS = {
    "doc": (".doc", "docx:MS Word 2007 XML", ".docx", DOCX_MIME),
    "xls": (".xls", "xlsx:Calc MS Excel 2007 XML", ".xlsx", XLSX_MIME),
    "ppt": (".ppt", "pptx:Impress MS PowerPoint 2007 XML", ".pptx", PPTX_MIME),
}
_KIND_BY_MIME = {DOC_MIME: "doc", XLS_MIME: "xls", PPT_MIME: "ppt"}


# --------------------------------------------------------------------------- tool


def soffice_path() -> str:
    for name in (os.environ.get("INGEST_SOFFICE", ""), "soffice", "libreoffice",
                 "/usr/lib/libreoffice/program/soffice"):
        if name and (found := shutil.which(name)):
            return found
    raise ExtractionError(ErrorCode.MISSING_TOOL, APT_HINT)


@functools.lru_cache(maxsize=4)
def _version_of(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        match = re.search(r"LibreOffice\s+([\d.]+)", out.stdout)
        if match:
            return match.group(1)
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "unknown"


def libreoffice_version() -> str:
    return _version_of(soffice_path())


# --------------------------------------------------------------------------- sniffing


def _sniff(path: Path, mime: str) -> tuple[str, str | None]:
    """(kind, protection) where protection is None, "encrypted" or "irm"."""
    import olefile

    if not olefile.isOleFile(str(path)):
        # Pre-OLE formats LibreOffice still reads (Excel 2-4 BIFF streams, Word for DOS
        # and Windows 1-2): converted by the kind the MIME type names.
        if mime in _KIND_BY_MIME:
            return _KIND_BY_MIME[mime], None
        raise ExtractionError(ErrorCode.UNSUPPORTED_TYPE, f"not a legacy Office file ({mime})")
    try:
        with olefile.OleFileIO(str(path)) as ole:
            entries = {"/".join(e).lower() for e in ole.listdir(streams=True, storages=True)}
    except (OSError, ValueError) as exc:
        raise ExtractionError(ErrorCode.CORRUPT, f"not a readable OLE2 (legacy Office) file: {exc}") from exc
    if any(e.startswith("\x06dataspaces") for e in entries) and (
        any("drm" in e for e in entries) or "\tdrmcontent" in entries
    ):
        return _KIND_BY_MIME.get(mime, "doc"), "irm"
    if "encryptedpackage" in entries:  # an encrypted OOXML file in an OLE wrapper
        return _KIND_BY_MIME.get(mime, "doc"), "encrypted-ooxml"
    kinds = []
    if "worddocument" in entries:
        kinds.append("doc")
    if "workbook" in entries or "book" in entries:
        kinds.append("xls")
    if "powerpoint document" in entries:
        kinds.append("ppt")
    preferred = _KIND_BY_MIME.get(mime)
    if preferred in kinds:
        kind = preferred
    elif kinds:
        kind = kinds[0]
    else:
        raise ExtractionError(
            ErrorCode.UNSUPPORTED_TYPE,
            "OLE2 file without a Word, Excel or PowerPoint stream "
            f"(streams: {', '.join(sorted(entries))[:200]})",
        )
    return kind, None


def _is_encrypted(path: Path) -> bool:
    import msoffcrypto

    try:
        with open(path, "rb") as fh:
            return bool(msoffcrypto.OfficeFile(fh).is_encrypted())
    except Exception:  # noqa: BLE001 - not decidable: let LibreOffice try
        return False


def _decrypt(path: Path, kind: str, passwords: list[str], dest: Path) -> Path:
    """Write a decrypted copy of ``path`` to ``dest`` with the first password that works."""
    import msoffcrypto

    if not passwords:
        raise ExtractionError(ErrorCode.ENCRYPTED, f"password-protected .{kind} file: password required")
    for password in passwords:
        try:
            with open(path, "rb") as src:
                office = msoffcrypto.OfficeFile(src)
                office.load_key(password=password)
                with open(dest, "wb") as out:
                    office.decrypt(out)
            if kind == "ppt":
                _unmark_ppt_encryption(dest)
            return dest
        except Exception:  # noqa: BLE001 - wrong password or unsupported scheme
            continue
    tried = f" (tried {len(passwords)})" if len(passwords) > 1 else ""
    raise ExtractionError(ErrorCode.ENCRYPTED, f"configured password did not open it{tried}")


def _unmark_ppt_encryption(path: Path) -> None:
    """msoffcrypto decrypts a .ppt's streams but keeps its ``EncryptedSummary`` stream,
    and LibreOffice refuses any .ppt holding one ("source file could not be loaded").
    Rename that directory entry in place (same length, so the directory's red-black
    tree, ordered by name length first, stays valid)."""
    data = bytearray(path.read_bytes())
    name = "EncryptedSummary".encode("utf-16-le")
    start = 0
    while (i := data.find(name, start)) >= 0:
        start = i + 1
        # a directory entry: 128-byte aligned, name length (with NUL) at +64
        if i % 128 == 0 and data[i + 64:i + 66] == (len(name) + 2).to_bytes(2, "little"):
            data[i:i + len(name)] = "EncryptedSummarx".encode("utf-16-le")
            path.write_bytes(bytes(data))
            return


# --------------------------------------------------------------------------- convert


def convert(path: Path, kind: str, outdir: Path, timeout: float = TIMEOUT_S) -> Path:
    """Convert ``path`` (a legacy .doc/.xls/.ppt) into ``outdir``; returns the new file."""
    binary = soffice_path()
    ext, export_filter, out_ext, _ = _KINDS[kind]
    outdir.mkdir(parents=True, exist_ok=True)
    source = outdir / f"source{ext}"  # generated name: the real one never reaches argv
    if path != source:
        shutil.copyfile(path, source)
    profile = outdir / "profile"
    home = outdir / "home"
    home.mkdir(exist_ok=True)
    result_dir = outdir / "out"
    cmd = [
        binary, "--headless", "--invisible", "--norestore", "--nolockcheck", "--nologo",
        "--nodefault", "--nofirststartwizard",
        f"-env:UserInstallation={profile.resolve().as_uri()}",
        "--convert-to", export_filter, "--outdir", str(result_dir), str(source),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAL_", "UNO_"))}
    env.update(HOME=str(home), TMPDIR=str(outdir), SAL_USE_VCLPLUGIN="svp")
    # Not a session of its own: in the parse sandbox LibreOffice stays in the sandbox
    # child's process group, so a sandbox timeout kills it too.
    out, err, returncode = run_tool(cmd, env=env, cwd=str(outdir), timeout=timeout, missing_hint=APT_HINT,
                                    label=f"{kind}/libreoffice", kill=kill_tree)
    converted = result_dir / f"source{out_ext}"
    if not converted.is_file() or converted.stat().st_size == 0:
        message = (err or b"").decode("utf-8", "replace") + (out or b"").decode("utf-8", "replace")
        lines = [ln.strip() for ln in message.splitlines()
                 if ln.strip() and "javaldx" not in ln]
        detail = " / ".join(lines[-2:]) or f"exit status {returncode}, no output"
        raise ExtractionError(ErrorCode.CORRUPT, f"{kind}/libreoffice: conversion failed: {detail}")
    return converted


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and every process below it (soffice -> oosplash -> soffice.bin).

    The tree is frozen first (SIGSTOP, repeated until no new descendant appears), so
    nothing can fork or be orphaned out of reach while it is being killed."""
    seen: set[int] = set()
    while True:
        tree = {proc.pid} | _descendants(proc.pid, seen)
        new = tree - seen
        if not new:
            break
        for pid in new:
            _signal(pid, signal.SIGSTOP)
        seen |= new
    for pid in seen:
        _signal(pid, signal.SIGKILL)
        _signal(pid, signal.SIGCONT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _descendants(root: int, known: set[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    found: set[int] = set()
    todo = [root, *known]  # stopped members keep their children attached
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


# --------------------------------------------------------------------------- router


def extract(path: Path, mime: str, ctx: ExtractContext) -> Extraction:
    """Router entry point for .doc/.xls/.ppt (see ``extractors.registry.EXTRACTORS``)."""
    kind, protection = _sniff(path, mime)
    if protection == "irm":
        raise ExtractionError(
            ErrorCode.IRM_PROTECTED,
            f"rights-management (IRM/DRM) protected .{kind} file; only its DRM client can open it",
        )
    if protection == "encrypted-ooxml":
        raise ExtractionError(ErrorCode.ENCRYPTED, "password-protected Office document (password required)")
    binary = soffice_path()  # fail early (missing-tool) before any work
    warnings: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"lo-{kind}-", dir=ctx.workdir) as tmp:
        work = Path(tmp)
        source = path
        if _is_encrypted(path):
            source = _decrypt(path, kind, ctx.passwords_for(path), work / f"source{_KINDS[kind][0]}")
            warnings.append("encrypted; opened with a configured password")
        converted = convert(source, kind, work)
        ooxml_mime = _KINDS[kind][3]
        if kind == "doc":
            inner = docx_ex.extract(converted, ooxml_mime, ctx)
        else:
            inner = unstructured_family.extract(converted, ooxml_mime, ctx)
    parser = inner.extractor.split("/", 1)[-1]  # "python-docx", "unstructured"
    inner.extractor = f"{kind}/libreoffice+{parser}"
    inner.extractor_version = (
        f"libreoffice-{_version_of(binary)}+{inner.extractor_version.rsplit('+', 1)[0]}"
        f"+{OUR_VERSION}"
    )
    inner.mime = mime if mime in _KIND_BY_MIME else {"doc": DOC_MIME, "xls": XLS_MIME,
                                                     "ppt": PPT_MIME}[kind]
    inner.warnings = warnings + [w for w in inner.warnings]
    return inner
