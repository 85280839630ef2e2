"""Which faults are worth retrying: shared by the pipeline (a group of documents) and the
Celery tasks (retry with backoff, or dead-letter)."""
from __future__ import annotations

import sqlite3


def is_transient(exc: BaseException) -> bool:
    """Faults that retrying can cure: the store or the broker busy or unreachable."""
    if isinstance(exc, sqlite3.OperationalError):  # locked, busy, cannot open (disk, NFS hiccup)
        return True
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    for cls in type(exc).__mro__:  # without importing the client libraries
        mod = cls.__module__
        if (mod.startswith(("redis.", "kombu.")) and cls.__name__ in ("ConnectionError", "TimeoutError",
                                                                       "OperationalError", "BusyLoadingError")) \
                or (mod.startswith("psycopg") and cls.__name__ in ("OperationalError", "InterfaceError")):
            return True
    return False
