"""Archives: ZIP, TAR (plain, .tar.gz/.tgz, .tar.bz2, .tar.xz), single-file gzip/bzip2/xz
and 7z. Members become child documents; the archive's own text is the list of names.

The format is sniffed from the content (the MIME type from the router only breaks
ties), so a ``.tgz`` routed as ``application/gzip`` is read as a tar.

Output: one ``paragraph`` element listing the member names (so the archive itself is
found by a member's name), and one ``Child`` per regular-file member, written under
``ctx.workdir`` with a generated name (see ``extractors._children``). Directories are
implied by the names; links, devices and FIFOs are never extracted (a warning names
them).

Limits (``ctx.limits``), enforced while expanding: every byte is counted as it comes
out of the decompressor, so a lying header cannot get past them. Declared sizes are
only ever used to refuse early, never to accept.

* depth: ``ctx.depth >= max_depth`` -> ``too-deep`` ("archive nested deeper than N levels").
* ratio: a member (ZIP: its compressed size; others: the whole archive) expanding
  beyond ``max_ratio`` once past 1 MiB -> ``zip-bomb`` ("zip bomb: ratio 1:4000 ...").
* total expanded bytes over ``max_expanded_bytes`` -> ``too-large``.
* more than ``max_members`` members -> ``too-large``.
* one member over ``max_member_bytes`` -> that member is skipped with a warning.
* a member byte-identical to the archive itself (droste.zip, the gzip quine) ->
  ``zip-bomb`` ("recursive archive: ..."); chains that are not byte-identical end at
  the depth limit.
* ZIP: encrypted members are tried with the passwords configured for the path; those
  that stay locked are skipped with a warning; if nothing could be opened because
  everything is locked -> ``encrypted``. 7z: same, with the archive's password.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path

from ._children import RATIO_FLOOR, ChildWriter, fix_surrogates, safe_name
from .base import Element, ExtractContext, Extraction, ExtractionError
from .errors import ErrorCode

OUR_VERSION = 1
_CHUNK = 1024 * 1024
_LISTED_NAMES = 10_000  # names listed in the archive's own text, at most

# What a damaged compressed stream raises (gzip.BadGzipFile is an OSError).
_DECOMPRESS_ERRORS = (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error, tarfile.TarError)

_COMPRESSED_SUFFIXES = {
    ".gz": "", ".gzip": "", ".z": "", ".bz2": "", ".bz": "", ".xz": "", ".lzma": "",
    ".tgz": ".tar", ".tbz2": ".tar", ".tbz": ".tar", ".txz": ".tar",
}


def extract(path: Path, mime: str, ctx: ExtractContext) -> Extraction:
    path = Path(path)
    lim = ctx.limits
    if ctx.depth >= lim.max_depth:
        raise ExtractionError(ErrorCode.TOO_DEEP, f"archive nested deeper than {lim.max_depth} levels")
    if ctx.workdir is None:
        raise ExtractionError(ErrorCode.EXTRACTOR_CRASH, "no work folder for child documents")
    kind = _sniff(path, mime)
    if kind == "zip":
        return _zip(path, mime, ctx)
    if kind == "7z":
        return _sevenzip(path, mime, ctx)
    if kind == "tar":
        return _tar(path, mime, ctx, None)
    if kind in ("gz", "bz2", "xz"):
        if _compressed_tar(path, kind):
            return _tar(path, mime, ctx, kind)
        return _single(path, mime, ctx, kind)
    raise ExtractionError(ErrorCode.UNSUPPORTED_TYPE, f"{path.name}: not an archive we can open ({mime})")


# -- sniffing -------------------------------------------------------------------------
def _sniff(path: Path, mime: str) -> str:
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        raise ExtractionError(ErrorCode.CORRUPT, f"cannot read file: {exc}") from exc
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return "7z"
    if head.startswith(b"\x1f\x8b"):
        return "gz"
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\xfd7zXZ\x00"):
        return "xz"
    if _is_tar_header(head):
        return "tar"
    m = (mime or "").lower()
    if "zip" in m and zipfile.is_zipfile(path):  # e.g. a self-extracting prefix
        return "zip"
    if "tar" in m:
        return "tar"
    return "unknown"


def _is_tar_header(block: bytes) -> bool:
    if len(block) < 512:
        return False
    try:
        tarfile.TarInfo.frombuf(block[:512], "utf-8", "surrogateescape")
        return True
    except (tarfile.HeaderError, ValueError):
        return False


def _open_decompressor(path: Path, kind: str):
    if kind == "gz":
        return gzip.open(path, "rb")
    if kind == "bz2":
        return bz2.open(path, "rb")
    return lzma.open(path, "rb")


def _compressed_tar(path: Path, kind: str) -> bool:
    try:
        with _open_decompressor(path, kind) as fh:
            return _is_tar_header(fh.read(512))
    except _DECOMPRESS_ERRORS:
        return False


class _BoundedStream(io.RawIOBase):
    """The decompressed stream of a .gz/.bz2/.xz file, counted as it is read: raises
    ``zip-bomb`` / ``too-large`` as soon as the output passes the limits (including
    bytes a tar reader only skips over)."""

    def __init__(self, fh, compressed_size: int, ctx: ExtractContext, name: str, slack: int):
        self._fh = fh
        self._compressed = max(compressed_size, 1)
        self._lim = ctx.limits
        self._name = name
        self._slack = slack
        self.produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self._fh.read(len(b))
        n = len(data)
        b[:n] = data
        self.produced += n
        self._check()
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = _CHUNK  # never "everything at once"
        data = self._fh.read(size)
        self.produced += len(data)
        self._check()
        return data

    def _check(self) -> None:
        lim = self._lim
        if self.produced > RATIO_FLOOR:
            ratio = self.produced / self._compressed
            if ratio > lim.max_ratio:
                raise ExtractionError(
                    ErrorCode.ZIP_BOMB,
                    f"zip bomb: ratio 1:{ratio:.0f} so far ({self._name} of {self._compressed} "
                    f"bytes expanded to {self.produced} bytes; limit 1:{lim.max_ratio:g})")
        if self.produced > lim.max_expanded_bytes + self._slack:
            raise ExtractionError(
                ErrorCode.TOO_LARGE,
                f"{self._name} expands to more than {lim.max_expanded_bytes} bytes (limit)")


def _declared_gzip_ratio(path: Path, ctx: ExtractContext) -> None:
    """The gzip trailer states the uncompressed size (mod 2**32): refuse early on it."""
    size = path.stat().st_size
    if size < 18:
        return
    with open(path, "rb") as fh:
        fh.seek(-4, io.SEEK_END)
        isize = int.from_bytes(fh.read(4), "little")
    ratio = isize / size
    if isize > RATIO_FLOOR and ratio > ctx.limits.max_ratio:
        raise ExtractionError(
            ErrorCode.ZIP_BOMB,
            f"zip bomb: ratio 1:{ratio:.0f} ({path.name} declares {isize} bytes from {size} "
            f"compressed; limit 1:{ctx.limits.max_ratio:g})")


def _result(names: list[str], writer: ChildWriter, fmt: str, lib: str, mime: str,
            warnings: list[str]) -> Extraction:
    elements = []
    listed = names[:_LISTED_NAMES]
    if listed:
        text = "\n".join(listed)
        if len(names) > len(listed):
            text += f"\n... and {len(names) - len(listed)} more"
        elements.append(Element("paragraph", text, meta={"archive_members": len(names)}))
    return Extraction(
        elements=elements,
        extractor=f"{fmt}/{lib.split('-')[0]}",
        extractor_version=f"{lib}+{OUR_VERSION}",
        mime=mime,
        warnings=[*warnings, *writer.warnings],
        children=list(writer.children),
    )


def _python_version() -> str:
    import sys

    return f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"


# -- ZIP ------------------------------------------------------------------------------
def _zip_names(infos: list[zipfile.ZipInfo]) -> dict[int, str]:
    """Member names as the archiver meant them. Without the UTF-8 flag (bit 11) zipfile
    decodes names as CP437; many tools write UTF-8 or the local code page (GBK,
    Shift-JIS, CP866...) there instead, so recover the bytes and guess once per archive."""
    out: dict[int, str] = {}
    legacy: list[tuple[int, bytes]] = []
    for i, info in enumerate(infos):
        if info.flag_bits & 0x800:
            out[i] = info.filename
            continue
        try:
            raw = info.orig_filename.encode("cp437")
        except UnicodeEncodeError:
            out[i] = info.filename
            continue
        try:
            out[i] = raw.decode("utf-8")
        except UnicodeDecodeError:
            legacy.append((i, raw))
    if legacy:
        encoding = "cp437"
        sample = b"\n".join(raw for _, raw in legacy)[:65536]
        try:
            from charset_normalizer import from_bytes

            best = from_bytes(sample).best()
            if best is not None and best.encoding:
                encoding = best.encoding
        except Exception:  # noqa: BLE001 - a guess, never a failure
            pass
        for i, raw in legacy:
            try:
                out[i] = raw.decode(encoding)
            except (UnicodeDecodeError, LookupError):
                out[i] = raw.decode("cp437")
    return out


def _zip(path: Path, mime: str, ctx: ExtractContext) -> Extraction:
    lim = ctx.limits
    arc_size = max(path.stat().st_size, 1)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError,
            EOFError, OSError) as exc:
        raise ExtractionError(ErrorCode.CORRUPT, f"zip: {type(exc).__name__}: {exc}") from exc
    warnings: list[str] = []
    with zf, ChildWriter(ctx, path, what="zip archive") as writer:
        infos = zf.infolist()
        names = _zip_names(infos)
        members = [(i, info) for i, info in enumerate(infos) if not info.is_dir()]
        if len(members) > lim.max_members:
            raise ExtractionError(
                ErrorCode.TOO_LARGE, f"zip archive holds {len(members)} members (limit {lim.max_members})")
        # Declared sizes: only to refuse early (the streaming checks below enforce).
        declared_total = 0
        for i, info in members:
            declared_total += info.file_size
            ratio = info.file_size / max(info.compress_size, 1)
            if info.file_size > RATIO_FLOOR and ratio > lim.max_ratio:
                raise ExtractionError(
                    ErrorCode.ZIP_BOMB,
                    f"zip bomb: ratio 1:{ratio:.0f} (member {names[i]!r} declares "
                    f"{info.file_size} bytes from {info.compress_size} compressed; "
                    f"limit 1:{lim.max_ratio:g})")
        if declared_total > RATIO_FLOOR and declared_total / arc_size > lim.max_ratio:
            raise ExtractionError(
                ErrorCode.ZIP_BOMB,
                f"zip bomb: ratio 1:{declared_total / arc_size:.0f} (members declare "
                f"{declared_total} bytes from a {arc_size}-byte archive; "
                f"limit 1:{lim.max_ratio:g})")
        if declared_total > lim.max_expanded_bytes:
            raise ExtractionError(
                ErrorCode.TOO_LARGE,
                f"zip archive declares {declared_total} bytes expanded "
                f"(limit {lim.max_expanded_bytes})")

        passwords = [pw.encode("utf-8") for pw in ctx.passwords_for(path)]
        listed: list[str] = []
        files = locked = 0
        failures: list[str] = []
        for i, info in members:
            name = names[i]
            listed.append(safe_name(name) or name)
            mode = info.external_attr >> 16
            if mode and (stat.S_ISLNK(mode) or (stat.S_IFMT(mode) and not stat.S_ISREG(mode))):
                warnings.append(f"member {name!r} skipped: not a regular file (link or special)")
                continue
            files += 1
            if info.file_size > lim.max_member_bytes:
                warnings.append(f"member {name!r} skipped: declares {info.file_size} bytes, "
                                f"over the limit of {lim.max_member_bytes}")
                continue
            meta = {"member": name, "compressed_size": info.compress_size,
                    "mtime": "%04d-%02d-%02dT%02d:%02d:%02d" % info.date_time}
            encrypted = bool(info.flag_bits & 0x1)
            if not encrypted:
                _zip_member(zf, info, None, name, meta, writer, failures)
                continue
            if info.compress_type == 99:
                reason = "AES-encrypted (not supported)"
            else:
                reason = "password required"
            for pw in passwords if info.compress_type != 99 else []:
                if _zip_member(zf, info, pw, name, {**meta, "encrypted": True}, writer, None):
                    break
            else:
                locked += 1
                warnings.append(f"member {name!r} skipped: encrypted ({reason})")
        if files and locked == files:
            raise ExtractionError(
                ErrorCode.ENCRYPTED, f"zip archive: all {files} members are encrypted (password required)")
        if failures and not writer.children and len(failures) + locked == files:
            raise ExtractionError(ErrorCode.CORRUPT, f"zip: no member could be read; {failures[0]}")
        warnings.extend(failures)
        return _result(listed, writer, "zip", f"zipfile-py{_python_version()}", mime, warnings)


def _zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, pwd: bytes | None, name: str,
                meta: dict, writer: ChildWriter, warnings: list[str] | None) -> bool:
    """Write one member; True if written. With a password, a wrong one returns False
    (``warnings`` is None then: the caller reports)."""
    try:
        with zf.open(info, pwd=pwd) as fh:
            child = writer.write_stream(name, fh.read, fallback=f"member-{len(writer.children) + 1}",
                                        meta=meta, compressed_size=info.compress_size,
                                        display=name)
        return child is not None
    except ExtractionError:
        raise
    except (RuntimeError, zipfile.BadZipFile, NotImplementedError, *_DECOMPRESS_ERRORS) as exc:
        if warnings is not None:
            warnings.append(f"member {name!r} skipped: {type(exc).__name__}: {exc}")
        return False


# -- TAR ------------------------------------------------------------------------------
_TAR_KIND = {
    tarfile.SYMTYPE: "symbolic link", tarfile.LNKTYPE: "hard link", tarfile.CHRTYPE:
    "character device", tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "FIFO",
}


def _tar(path: Path, mime: str, ctx: ExtractContext, compression: str | None) -> Extraction:
    lim = ctx.limits
    size = path.stat().st_size
    if compression == "gz":
        _declared_gzip_ratio(path, ctx)
    raw = _open_decompressor(path, compression) if compression else open(path, "rb")
    # Tar headers and padding take up to ~1 KiB per member on top of the data.
    stream = _BoundedStream(raw, size, ctx, path.name, slack=1024 * (lim.max_members + 1))
    warnings: list[str] = []
    listed: list[str] = []
    fmt = "tar" if not compression else f"tar.{compression}"
    with raw, ChildWriter(ctx, path, what=f"{fmt} archive") as writer:
        try:
            tf = tarfile.open(fileobj=io.BufferedReader(stream, _CHUNK), mode="r|",
                              errors="surrogateescape")
        except _DECOMPRESS_ERRORS as exc:
            raise ExtractionError(ErrorCode.CORRUPT, f"{fmt}: {type(exc).__name__}: {exc}") from exc
        count = 0
        try:
            for ti in tf:
                count += 1
                if count > lim.max_members:
                    raise ExtractionError(
                        ErrorCode.TOO_LARGE, f"{fmt} archive holds more than {lim.max_members} members "
                        f"(limit)")
                if ti.isdir():
                    continue
                name = fix_surrogates(ti.name)
                listed.append(safe_name(name) or name)
                if not ti.isreg():
                    kind = _TAR_KIND.get(ti.type, f"type {ti.type!r}")
                    target = f" -> {fix_surrogates(ti.linkname)!r}" if ti.linkname else ""
                    warnings.append(f"member {name!r} skipped: {kind}{target} (links and special "
                                    f"files are not extracted)")
                    continue
                if ti.size > lim.max_member_bytes:
                    warnings.append(f"member {name!r} skipped: declares {ti.size} bytes, over "
                                    f"the limit of {lim.max_member_bytes}")
                    continue
                fh = tf.extractfile(ti)
                if fh is None:
                    continue
                writer.write_stream(name, fh.read, fallback=f"member-{count}", display=name,
                                    meta={"member": name, "mtime": int(ti.mtime)})
        except ExtractionError:
            raise
        except _DECOMPRESS_ERRORS as exc:
            if not writer.children and not listed:
                raise ExtractionError(ErrorCode.CORRUPT, f"{fmt}: {type(exc).__name__}: {exc}") from exc
            warnings.append(f"{fmt} archive damaged after {count} members "
                            f"({type(exc).__name__}: {exc}); the rest is not extracted")
        return _result(listed, writer, fmt, f"tarfile-py{_python_version()}", mime, warnings)


# -- single-file gzip / bzip2 / xz ----------------------------------------------------
def _single(path: Path, mime: str, ctx: ExtractContext, kind: str) -> Extraction:
    size = path.stat().st_size
    if kind == "gz":
        _declared_gzip_ratio(path, ctx)
    name = _decompressed_name(path, ctx, kind)
    raw = _open_decompressor(path, kind)
    stream = _BoundedStream(raw, size, ctx, path.name, slack=0)
    warnings: list[str] = []
    with raw, ChildWriter(ctx, path, what=f"{kind} file") as writer:
        try:
            child = writer.write_stream(name, stream.read, fallback=f"{path.name}.out",
                                        compressed_size=size, display=name,
                                        meta={"member": name})
        except ExtractionError:
            raise
        except _DECOMPRESS_ERRORS as exc:
            raise ExtractionError(ErrorCode.CORRUPT, f"{kind}: {type(exc).__name__}: {exc}") from exc
        listed = [child.name] if child else [safe_name(name) or name]
        lib = {"gz": "gzip", "bz2": "bz2", "xz": "lzma"}[kind]
        return _result(listed, writer, kind, f"{lib}-py{_python_version()}", mime, warnings)


def _decompressed_name(path: Path, ctx: ExtractContext, kind: str) -> str:
    """"report.txt.gz" -> "report.txt"; a name without a known suffix (a child's
    generated work file, say) -> the name stored in the gzip header, else the name."""
    source = str(ctx.source_path or path)
    base = source.replace("\\", "/").rsplit("!", 1)[-1].rsplit("/", 1)[-1] or path.name
    stem, dot, ext = base.rpartition(".")
    if dot and "." + ext.lower() in _COMPRESSED_SUFFIXES:
        return stem + _COMPRESSED_SUFFIXES["." + ext.lower()]
    if kind == "gz":
        stored = _gzip_stored_name(path)
        if stored:
            return stored
    return base


def _gzip_stored_name(path: Path) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if len(head) < 10 or not head[3] & 0x08:  # FNAME flag
        return None
    pos = 10
    if head[3] & 0x04:  # FEXTRA
        if len(head) < 12:
            return None
        pos += 2 + int.from_bytes(head[10:12], "little")
    end = head.find(b"\x00", pos)
    if end < 0:
        return None
    return head[pos:end].decode("latin-1") or None


# -- 7z -------------------------------------------------------------------------------
class _SevenZipSink:
    """py7zr's writer protocol (``Py7zIO``) feeding one child through the limits.

    py7zr keeps decompressing a member we skipped (over its size limit), so every byte
    is also counted here against the archive's size: ratio and total are enforced on
    what comes out of the decompressor, not on what we keep."""

    def __init__(self, factory: "_SevenZipFactory", sink):
        self._f = factory
        self._sink = sink
        self._size = 0

    def write(self, s) -> int:
        n = len(s)
        self._size += n
        self._f.produced(n)
        if self._sink is not None:
            self._sink.write(bytes(s))
        return n

    def read(self, size=None) -> bytes:
        return b""

    def seek(self, offset, whence=0) -> int:
        return 0

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        pass

    def size(self) -> int:
        return self._size

    def close(self) -> None:
        if self._sink is not None:
            sink, self._sink = self._sink, None
            sink.finish()


class _SevenZipFactory:
    def __init__(self, writer: ChildWriter, ctx: ExtractContext, arc_size: int, what: str):
        self.writer = writer
        self.lim = ctx.limits
        self.arc_size = max(arc_size, 1)
        self.what = what
        self.total = 0
        self.sinks: list[_SevenZipSink] = []

    def create(self, filename: str) -> _SevenZipSink:
        # py7zr hands over its own sanitised relative name; ours is applied on top.
        name = filename
        sink = self.writer.open_member(name, fallback=f"member-{len(self.sinks) + 1}",
                                       meta={"member": name}, display=name)
        s = _SevenZipSink(self, sink)
        self.sinks.append(s)
        return s

    def produced(self, n: int) -> None:
        self.total += n
        lim = self.lim
        if self.total > RATIO_FLOOR and self.total / self.arc_size > lim.max_ratio:
            raise ExtractionError(
                ErrorCode.ZIP_BOMB,
                f"zip bomb: ratio 1:{self.total / self.arc_size:.0f} so far ({self.what} of "
                f"{self.arc_size} bytes expanded to {self.total} bytes; "
                f"limit 1:{lim.max_ratio:g})")
        if self.total > lim.max_expanded_bytes:
            raise ExtractionError(
                ErrorCode.TOO_LARGE, f"{self.what} expands to more than {lim.max_expanded_bytes} bytes "
                f"(limit)")


def _sevenzip(path: Path, mime: str, ctx: ExtractContext) -> Extraction:
    try:
        import py7zr
        from py7zr.exceptions import PasswordRequired
        from py7zr.helpers import get_sanitized_output_path
    except ImportError as exc:
        raise ExtractionError(ErrorCode.EXTRACTOR_CRASH, f"7z: py7zr not importable: {exc}") from exc
    arc_size = max(path.stat().st_size, 1)
    if not _sevenzip_encrypted(path, py7zr, PasswordRequired):
        try:
            return _sevenzip_try(path, mime, ctx, None, arc_size, py7zr, get_sanitized_output_path)
        except (ExtractionError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - py7zr raises many kinds on damage
            raise ExtractionError(ErrorCode.CORRUPT, f"7z: {type(exc).__name__}: {exc}") from exc
    passwords = ctx.passwords_for(path)
    last_exc: BaseException | None = None
    for pw in passwords:
        try:
            return _sevenzip_try(path, mime, ctx, pw, arc_size, py7zr, get_sanitized_output_path)
        except (ExtractionError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - a wrong password shows as CRC/data errors
            last_exc = exc
    n = len(passwords)
    tried = f" ({n} configured password{'s' if n != 1 else ''} did not open it)" if n else ""
    raise ExtractionError(
        ErrorCode.ENCRYPTED, f"7z archive is password-protected: password required{tried}") from last_exc


def _sevenzip_encrypted(path: Path, py7zr, password_required) -> bool:
    try:
        with open(path, "rb") as fh, py7zr.SevenZipFile(fh, mode="r") as z:
            return bool(z.needs_password())
    except password_required:
        return True  # the header itself is encrypted
    except Exception:  # noqa: BLE001 - damaged: the extraction attempt reports it
        return False


def _sevenzip_try(path: Path, mime: str, ctx: ExtractContext, pw: str | None, arc_size: int,
                  py7zr, sanitize) -> Extraction:
    lim = ctx.limits
    warnings: list[str] = []
    with open(path, "rb") as fh, py7zr.SevenZipFile(
            fh, mode="r", password=pw, max_extract_size=lim.max_expanded_bytes + 1) as z:
        if z.needs_password() and pw is None:
            from py7zr.exceptions import PasswordRequired

            raise PasswordRequired("7z archive content is encrypted")
        files = list(z.files)
        regular = [f for f in files if not f.is_directory]
        if len(regular) > lim.max_members:
            raise ExtractionError(
                ErrorCode.TOO_LARGE, f"7z archive holds {len(regular)} members (limit {lim.max_members})")
        declared = sum(f.uncompressed or 0 for f in regular)
        if declared > RATIO_FLOOR and declared / arc_size > lim.max_ratio:
            raise ExtractionError(
                ErrorCode.ZIP_BOMB,
                f"zip bomb: ratio 1:{declared / arc_size:.0f} (members declare {declared} bytes "
                f"from a {arc_size}-byte archive; limit 1:{lim.max_ratio:g})")
        if declared > lim.max_expanded_bytes:
            raise ExtractionError(
                ErrorCode.TOO_LARGE, f"7z archive declares {declared} bytes expanded "
                f"(limit {lim.max_expanded_bytes})")
        listed: list[str] = []
        targets: list[str] = []
        for f in regular:
            name = f.filename
            listed.append(safe_name(name) or name)
            if f.is_symlink or getattr(f, "is_junction", False) or getattr(f, "is_socket", False):
                warnings.append(f"member {name!r} skipped: link or special file (not extracted)")
                continue
            if (f.uncompressed or 0) > lim.max_member_bytes:
                warnings.append(f"member {name!r} skipped: declares {f.uncompressed} bytes, over "
                                f"the limit of {lim.max_member_bytes}")
                continue
            try:
                sanitize(name, None)
            except Exception:  # noqa: BLE001 - py7zr refuses the name (e.g. "../x")
                warnings.append(f"member {name!r} skipped: py7zr refuses to extract this name")
                continue
            targets.append(name)
        with ChildWriter(ctx, path, what="7z archive") as writer:
            if targets:
                factory = _SevenZipFactory(writer, ctx, arc_size, "7z archive")
                try:
                    z.extract(path=None, targets=targets, factory=factory)
                except py7zr.exceptions.DecompressionBombError as exc:
                    raise ExtractionError(
                        ErrorCode.TOO_LARGE, f"7z archive expands to more than {lim.max_expanded_bytes} "
                        f"bytes (limit)") from exc
                for s in factory.sinks:  # members py7zr did not close (empty ones)
                    s.close()
            return _result(listed, writer, "7z", f"py7zr-{py7zr.__version__}", mime, warnings)
