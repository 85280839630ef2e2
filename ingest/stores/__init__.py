"""Stores: where chunks, vectors and the registry live. ``open_store`` picks one by URL:
a path or ``sqlite:///path`` -> :class:`~ingest.stores.sqlite.SQLiteStore`;
``postgresql://...`` -> :class:`~ingest.stores.postgres.PostgresStore`."""
from __future__ import annotations

import os
from pathlib import Path

from ingest.config import settings

DEFAULT_STORE = "~/.ingest/index.db"
PG_SCHEMES = ("postgresql://", "postgres://")

_open: dict[str, object] = {}


def is_postgres(url: str | os.PathLike | None) -> bool:
    return str(url or settings().store or "").startswith(PG_SCHEMES)


def store_path(url: str | os.PathLike | None) -> Path:
    """The file of a SQLite store. A PostgreSQL store has none: a clear error (use ``store_url``)."""
    url = str(url or settings().store or DEFAULT_STORE)
    if url.startswith("sqlite:///"):
        url = url[len("sqlite:///"):]
    if url.startswith(PG_SCHEMES):
        raise ValueError("a PostgreSQL store has no local file: this needs a SQLite store path "
                         "(or, for `ingest run/add/worker/status`, give --broker)")
    if "://" in url:
        raise ValueError(f"store {url!r}: use a SQLite path or a postgresql:// URL")
    return Path(url).expanduser().resolve()


def store_url(url: str | os.PathLike | None) -> str:
    """Canonical form: the absolute path of a SQLite store, or the PostgreSQL URL as given."""
    if is_postgres(url):
        return str(url or settings().store)
    return str(store_path(url))


def open_store(url: str | os.PathLike | None = None):
    """Open (and create or migrate) a store; one handle per process and path/URL."""
    key = str(url or "")
    s = _open.get((key, os.getpid()))
    if s is None:
        if is_postgres(url):
            from ingest.stores.postgres import PostgresStore

            s = PostgresStore(store_url(url))
        else:
            from ingest.stores.sqlite import SQLiteStore

            s = SQLiteStore(store_path(url))
        _open[(key, os.getpid())] = s
    return s


def close_all() -> None:
    """Close this process's store handles (tests; before dropping a database)."""
    for (key, pid), s in list(_open.items()):
        if pid == os.getpid():
            s.close()
            del _open[(key, pid)]
