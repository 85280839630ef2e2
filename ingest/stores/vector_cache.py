"""The SQLite store's vector matrix, cached in one file beside the store for cold processes.

A fresh process (``ingest search``) would otherwise read every chunk's vector blob out of
SQLite to score one query (at 10k chunks: ~15 MB of rows, most of the search's own work).
The first process that reads them writes them here as one float32 matrix; the next ones map
that file instead (``mmap``, copy-on-write: nothing is read twice, nothing is written back).

What the cache may decide, and what it may not: it holds the vectors only. Which rows exist,
which document each belongs to and what the caller may read always come from SQL in the
search's own read snapshot; the cache is used only when it was written for exactly those rows
(the sha256 of their rowids), by this store (its ``uid``, made at creation), at this
generation (``meta.gen``, bumped by every write of chunks) and for this model. Its bytes are
checked against the sha256 in its header, so a torn or corrupt file is read from SQLite and
written again, never used. A file that is a link, not a regular file, not owned by the
store's owner, or larger than its header says is ignored the same way.

File ``<store>.vectors``: ``MAGIC``, a 4-byte little-endian header length, the header (JSON),
zero padding to a multiple of 64 bytes, then ``n x dim`` float32 rows in rowid order. It is
created with the store file's permission bits (it is derived from the same content) and
replaced atomically (a temporary file, then ``rename``), so a process mapping the old one
keeps a consistent copy.
"""
from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import stat
import struct
from pathlib import Path

log = logging.getLogger("ingest.stores")

MAGIC = b"INGVEC1\n"
_ALIGN = 64


def cache_path(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".vectors")


def _rowids_digest(rowids) -> str:
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(rowids, dtype="<i8").tobytes()).hexdigest()


def _key(uid: str, gen: int, model_id: str, rowids, dim: int) -> dict:
    return {"uid": uid, "gen": int(gen), "model_id": model_id, "rows": int(len(rowids)), "dim": int(dim),
            "rowids_sha256": _rowids_digest(rowids)}


def load(store_path: Path, uid: str, gen: int, model_id: str, rowids):
    """The cached matrix (``len(rowids) x dim`` float32, rows in ``rowids`` order) when the file
    beside the store was written for exactly this store, generation, model and rows and its
    bytes check out; else None."""
    import numpy as np

    path = cache_path(store_path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.stat(store_path).st_uid or st.st_size < len(MAGIC) + 4:
            return None
        buf = mmap.mmap(fd, st.st_size, access=mmap.ACCESS_COPY)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    try:
        if buf[:len(MAGIC)] != MAGIC:
            raise ValueError("not a vector cache")
        (hlen,) = struct.unpack_from("<I", buf, len(MAGIC))
        start = len(MAGIC) + 4
        if hlen > 1 << 16 or start + hlen > len(buf):
            raise ValueError("bad header length")
        head = json.loads(bytes(buf[start:start + hlen]))
        off = -(-(start + hlen) // _ALIGN) * _ALIGN
        dim = head.get("dim")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError("bad dimension")
        want = _key(uid, gen, model_id, rowids, dim)
        if any(head.get(k) != v for k, v in want.items()):
            return None  # another generation, model or store: stale, not corrupt
        nbytes = len(rowids) * dim * 4
        if len(buf) != off + nbytes:
            raise ValueError(f"{len(buf)} bytes, the header says {off + nbytes}")
        view = memoryview(buf)[off:]
        if hashlib.sha256(view).hexdigest() != head.get("sha256"):
            raise ValueError("checksum mismatch")
        return np.frombuffer(buf, dtype="<f4", count=len(rowids) * dim, offset=off).reshape(len(rowids), dim)
    except (ValueError, KeyError, TypeError, struct.error) as e:
        log.warning("vector cache %s: %s; reading the vectors from the store (and writing it again)", path, e)
        return None


def save(store_path: Path, uid: str, gen: int, model_id: str, rowids, mat) -> None:
    """Write the cache for these rows (best effort: a store folder this process may not write
    to, a full disk ... leaves no cache, and the search goes on)."""
    import numpy as np

    path = cache_path(store_path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    mat = np.ascontiguousarray(mat, dtype="<f4")
    head = _key(uid, gen, model_id, rowids, mat.shape[1])
    head["sha256"] = hashlib.sha256(memoryview(mat).cast("B")).hexdigest()
    hb = json.dumps(head, sort_keys=True).encode()
    start = len(MAGIC) + 4 + len(hb)
    pad = -start % _ALIGN
    try:
        mode = stat.S_IMODE(os.stat(store_path).st_mode) & 0o666
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, mode)
            with os.fdopen(fd, "wb", closefd=False) as f:
                f.write(MAGIC + struct.pack("<I", len(hb)) + hb + b"\0" * pad)
                f.write(memoryview(mat).cast("B"))
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        log.debug("vector cache %s not written: %s", path, e)
        try:
            os.unlink(tmp)
        except OSError:
            pass
