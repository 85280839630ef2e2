"""Stores: where chunks, vectors and the registry live. ``open_store`` picks one by URL."""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STORE = "~/.ingest/index.db"

_open: dict[str, object] = {}


def store_path(url: str | os.PathLike | None) -> Path:
    url = str(url or os.environ.get("INGEST_STORE") or DEFAULT_STORE)
    if url.startswith("sqlite:///"):
        url = url[len("sqlite:///"):]
    if "://" in url:
        raise ValueError(f"store {url!r}: only SQLite paths are supported in this version")
    return Path(url).expanduser().resolve()


def open_store(url: str | os.PathLike | None = None):
    """Open (and create or migrate) a store; one handle per process and path."""
    key = str(url or "")
    s = _open.get((key, os.getpid()))
    if s is None:
        from .sqlite import SQLiteStore

        s = SQLiteStore(store_path(url))
        _open[(key, os.getpid())] = s
    return s
