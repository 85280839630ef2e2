"""Writing child documents (archive members, mail attachments) safely and within limits.

Shared by ``extractors.archive`` and ``extractors.email_family``.

* ``safe_name(raw)`` turns a member path / attachment file name as the container states
  it into a name fit for display and addressing (``<parent uri>!<name>``): POSIX
  separators, no drive letter, no leading "/", no "." or ".." components, no control
  or format characters. It is NEVER used as a file system path.
* ``ChildWriter`` writes each child's bytes to a fresh file under ``ctx.workdir`` with a
  generated name (``child-00001.pdf``...: a counter plus the member's extension when
  that is 1-10 letters/digits, so detection can still break ties by extension; created
  with O_EXCL|O_NOFOLLOW), streaming with
  bounded reads, and enforces ``Limits`` while the bytes arrive: per-member size,
  total expanded size, compression ratio (per member and in total), and refuses a
  child that is byte-identical to its parent (a self-reproducing archive). On any
  exception inside ``with ChildWriter(...)`` every file it wrote is removed again.
"""
from __future__ import annotations

import hashlib
import mimetypes
import os
import posixpath
import re
import unicodedata
from pathlib import Path
from typing import Callable

from .base import Child, ExtractContext, ExtractionError
from .errors import ErrorCode

# A compression ratio is only judged once this much has been expanded: a 20 KB text
# file of repeated lines legitimately compresses 1:300, a 10 MB one does not.
RATIO_FLOOR = 1024 * 1024
_CHUNK = 1024 * 1024
_MAX_NAME_CHARS = 1024
_DRIVE = re.compile(r"^[A-Za-z]:")

# Extensions for nameless attachments (mimetypes' first guess is sometimes odd).
_EXT_OVERRIDES = {
    "text/plain": ".txt",
    "message/rfc822": ".eml",
    "application/octet-stream": ".bin",
    "image/jpeg": ".jpg",
    "image/tiff": ".tif",
    "application/vnd.ms-outlook": ".msg",
    "application/ms-tnef": ".dat",
    "application/vnd.ms-tnef": ".dat",
    "text/calendar": ".ics",
    "text/html": ".html",
}


class LimitExceeded(Exception):
    """Raised inside a streaming read to abandon one member (not the whole container)."""


def extension_for(content_type: str | None) -> str:
    ct = (content_type or "").lower().split(";")[0].strip()
    if ct in _EXT_OVERRIDES:
        return _EXT_OVERRIDES[ct]
    return mimetypes.guess_extension(ct, strict=False) or ".bin"


def work_extension(name: str) -> str:
    """The extension a child's work file gets ("child-00007.csv"), so content detection
    can still break ties by extension; only a short alphanumeric suffix, lower-cased."""
    ext = posixpath.splitext(name)[1]
    return ext.lower() if re.fullmatch(r"\.[A-Za-z0-9]{1,10}", ext) else ""


def fix_surrogates(text: str) -> str:
    """Names decoded with ``surrogateescape`` (tar, mail headers with raw 8-bit bytes):
    recover the bytes and decode them as UTF-8, else Windows-1252."""
    if not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    raw = text.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", "replace")


def safe_name(raw: str | None) -> str:
    """A member/attachment name made safe for display and addressing; "" if nothing is left.

    "../../etc/passwd" -> "etc/passwd"; "C:\\TEMP\\x.png" -> "TEMP/x.png";
    "/abs/a.txt" -> "abs/a.txt"; control and format characters (incl. bidi overrides,
    zero-width characters, NUL, newlines) are removed.
    """
    if not raw:
        return ""
    text = unicodedata.normalize("NFC", fix_surrogates(str(raw)))
    text = "".join(
        ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Zl", "Zp")
    )
    text = text.replace("\\", "/")
    text = _DRIVE.sub("", text)
    parts = [p.strip() for p in text.split("/")]
    parts = [p for p in parts if p and p not in (".", "..") and p.strip(".")]
    name = "/".join(parts)
    if len(name) > _MAX_NAME_CHARS:
        stem, ext = posixpath.splitext(name)
        ext = ext if len(ext) <= 16 else ""
        name = stem[: _MAX_NAME_CHARS - len(ext)] + ext
    return name


class ChildWriter:
    """Writes child documents for one container and enforces the limits.

    ``mode="archive"``: a limit breach raises ``ExtractionError`` (the container is
    quarantined with the reason), except a single over-sized member, which is skipped
    with a warning. ``mode="mail"``: breaches skip attachments with a warning (the
    message text is still worth indexing; attachments cannot be decompression bombs).
    """

    def __init__(self, ctx: ExtractContext, parent: Path, *, mode: str = "archive",
                 what: str = "archive"):
        self.ctx = ctx
        self.limits = ctx.limits
        self.parent = Path(parent)
        self.mode = mode
        self.what = what
        self.children: list[Child] = []
        self.warnings: list[str] = []
        self.total = 0  # bytes written to children
        self._names: set[str] = set()
        self._created: list[Path] = []
        self._seq = 0
        self._parent_size = self.parent.stat().st_size
        self._parent_sha: str | None = None
        self._workdir: Path | None = None

    # -- context manager: clean up on failure ------------------------------------------
    def __enter__(self) -> "ChildWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard_all()

    def discard_all(self) -> None:
        for p in self._created:
            try:
                p.unlink()
            except OSError:
                pass
        self._created.clear()
        self.children.clear()

    # -- names -------------------------------------------------------------------------
    def unique_name(self, raw: str | None, fallback: str) -> str:
        name = safe_name(raw) or fallback
        if name not in self._names:
            self._names.add(name)
            return name
        stem, ext = posixpath.splitext(name)
        k = 2
        while f"{stem} ({k}){ext}" in self._names:
            k += 1
        name = f"{stem} ({k}){ext}"
        self._names.add(name)
        return name

    # -- files -------------------------------------------------------------------------
    def _open_new(self, ext: str = "") -> tuple[Path, int]:
        if self._workdir is None:
            if self.ctx.workdir is None:
                raise ExtractionError(ErrorCode.EXTRACTOR_CRASH, "no work folder for child documents")
            self._workdir = Path(self.ctx.workdir)
            self._workdir.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        while True:
            self._seq += 1
            p = self._workdir / f"child-{self._seq:05d}{ext}"
            try:
                fd = os.open(p, flags, 0o640)
            except FileExistsError:
                continue  # another container shares the work folder
            self._created.append(p)
            return p, fd

    def _drop(self, p: Path) -> None:
        try:
            p.unlink()
        except OSError:
            pass
        if p in self._created:
            self._created.remove(p)

    def parent_sha256(self) -> str:
        if self._parent_sha is None:
            h = hashlib.sha256()
            with open(self.parent, "rb") as fh:
                while block := fh.read(_CHUNK):
                    h.update(block)
            self._parent_sha = h.hexdigest()
        return self._parent_sha

    # -- the one way a child gets written ------------------------------------------------
    def open_member(self, raw_name: str | None, *, fallback: str, meta: dict | None = None,
                    compressed_size: int | None = None,
                    display: str | None = None) -> "MemberSink | None":
        """A push-style sink for one member (``write(block)`` ... ``finish()``); None
        when the member is not to be extracted (mail: attachment count over the limit)."""
        lim = self.limits
        label = display if display is not None else (raw_name or fallback)
        if len(self.children) >= lim.max_members:
            if self.mode == "archive":
                raise ExtractionError(
                    ErrorCode.TOO_LARGE, f"{self.what} holds more than {lim.max_members} members (limit)")
            self.warnings.append(
                f"attachment {label!r} not extracted: more than {lim.max_members} "
                f"attachments (limit)")
            return None
        path, fd = self._open_new(work_extension(safe_name(raw_name) or fallback))
        return MemberSink(self, path, fd, raw_name, fallback, meta, compressed_size, label)

    def write_stream(self, raw_name: str | None, read: Callable[[int], bytes], *,
                     fallback: str, meta: dict | None = None,
                     compressed_size: int | None = None,
                     display: str | None = None) -> Child | None:
        """Stream one member into a new child file; return the Child, or None if skipped.

        ``read(n)`` returns at most n bytes (b"" at the end). ``compressed_size`` (the
        member's compressed size, when the format has one per member) enables the
        per-member ratio check. ``display`` names the member in messages.
        """
        sink = self.open_member(raw_name, fallback=fallback, meta=meta,
                                compressed_size=compressed_size, display=display)
        if sink is None:
            return None
        try:
            while True:
                block = read(_CHUNK)
                if not block:
                    break
                sink.write(block)
                if sink.skipped:
                    break
        except BaseException:
            sink.abort()
            raise
        return sink.finish()

    def write_bytes(self, raw_name: str | None, data: bytes, *, fallback: str,
                    meta: dict | None = None) -> Child | None:
        pos = 0

        def read(n: int) -> bytes:
            nonlocal pos
            block = data[pos:pos + n]
            pos += len(block)
            return block

        return self.write_stream(raw_name, read, fallback=fallback, meta=meta)

    # -- limits --------------------------------------------------------------------------
    def _total_exceeded(self, label: str) -> None:
        if self.mode == "archive":
            raise ExtractionError(
                ErrorCode.TOO_LARGE,
                f"{self.what} expands to more than {self.limits.max_expanded_bytes} bytes "
                f"(limit; stopped in member {label!r})")

    def _check_ratio(self, label: str, written: int, compressed_size: int | None) -> None:
        max_ratio = self.limits.max_ratio
        if compressed_size is not None and written > RATIO_FLOOR:
            ratio = written / max(compressed_size, 1)
            if ratio > max_ratio:
                raise ExtractionError(
                    ErrorCode.ZIP_BOMB,
                    f"zip bomb: ratio 1:{ratio:.0f} so far (member {label!r} expanded to "
                    f"{written} bytes from {compressed_size} compressed; limit 1:{max_ratio:g})")
        total = self.total + written
        if total > RATIO_FLOOR:
            ratio = total / max(self._parent_size, 1)
            if ratio > max_ratio:
                raise ExtractionError(
                    ErrorCode.ZIP_BOMB,
                    f"zip bomb: ratio 1:{ratio:.0f} so far ({self.what} of {self._parent_size} "
                    f"bytes expanded to {total} bytes; limit 1:{max_ratio:g})")


class MemberSink:
    """One child file being written. ``write`` enforces the limits as bytes arrive: a
    member over its own size limit (or, for mail, over the total) is skipped with a
    warning (``skipped`` turns True, later writes are dropped); an archive-level breach
    raises ``ExtractionError``."""

    def __init__(self, writer: ChildWriter, path: Path, fd: int, raw_name: str | None,
                 fallback: str, meta: dict | None, compressed_size: int | None, label: str):
        self.w = writer
        self.path = path
        self._out = os.fdopen(fd, "wb")
        self.raw_name = raw_name
        self.fallback = fallback
        self.meta = meta
        self.compressed_size = compressed_size
        self.label = label
        self.written = 0
        self.skipped = False
        self._h = hashlib.sha256()

    def write(self, block: bytes) -> None:
        if self.skipped or not block:
            return
        w, lim = self.w, self.w.limits
        self.written += len(block)
        try:
            if self.written > lim.max_member_bytes:
                noun = "member" if w.mode == "archive" else "attachment"
                raise LimitExceeded(
                    f"{noun} {self.label!r} skipped: larger than {lim.max_member_bytes} "
                    f"bytes (limit)")
            if w.total + self.written > lim.max_expanded_bytes:
                w._total_exceeded(self.label)
                raise LimitExceeded(
                    f"attachment {self.label!r} not extracted: attachments together exceed "
                    f"{lim.max_expanded_bytes} bytes (limit)")
            if w.mode == "archive":
                w._check_ratio(self.label, self.written, self.compressed_size)
        except LimitExceeded as exc:
            self.skipped = True
            w.warnings.append(str(exc))
            self.abort()
            return
        self._h.update(block)
        self._out.write(block)

    def abort(self) -> None:
        if not self._out.closed:
            self._out.close()
        self.w._drop(self.path)

    def finish(self) -> Child | None:
        if self.skipped:
            return None
        self._out.close()
        w = self.w
        w.total += self.written
        sha = self._h.hexdigest()
        if w.mode == "archive" and self.written == w._parent_size and sha == w.parent_sha256():
            w._drop(self.path)
            raise ExtractionError(
                ErrorCode.ZIP_BOMB,
                f"recursive archive: member {self.label!r} is a byte-identical copy of the "
                f"{w.what} itself (sha256 {sha[:16]}...), it would expand forever")
        name = w.unique_name(self.raw_name, self.fallback)
        child = Child(name=name, path=str(self.path), size=self.written,
                      meta={**(self.meta or {}), "sha256": sha})
        w.children.append(child)
        return child
