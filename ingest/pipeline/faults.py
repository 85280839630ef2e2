"""Which faults are worth retrying: shared by the pipeline (a group of documents) and the
Celery tasks (retry with backoff, or dead-letter)."""
from __future__ import annotations

import sqlite3

from ingest.sources.connector import ConnectorError


def is_transient(exc: BaseException) -> bool:
    """Faults that retrying can cure: the store or the broker busy or unreachable, or a source
    (a connector's call failed: unreachable, an HTTP error, a response it could not read)."""
    if isinstance(exc, (sqlite3.OperationalError, ConnectorError)):  # locked, busy, cannot open; source down
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
