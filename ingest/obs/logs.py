"""Structured logs: ``--log-json`` (or ``INGEST_LOG_JSON=1``) writes one JSON object per line.

Fields: ``ts`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, and the structured extras a
record carries: ``outcome`` (one per document: doc id, source, action, stage timings, reason,
lane, version; logger ``ingest.outcome``) and ``alert`` (quality alerts). Document text and
secrets are never put in a log record above DEBUG.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time

from ingest.config import settings

EXTRAS = ("outcome", "alert")


def json_wanted() -> bool:
    return settings().log_json


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        d = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
             "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for k in EXTRAS:
            v = getattr(record, k, None)
            if v is not None:
                d[k] = v
        if record.exc_info:
            d["exc"] = self.formatException(record.exc_info)
        return json.dumps(d, default=str, ensure_ascii=False)


def setup(level: int, as_json: bool | None = None) -> None:
    """Configure the root logger; JSON when asked (the choice is passed on to child processes)."""
    as_json = json_wanted() if as_json is None else as_json
    if as_json:
        os.environ["INGEST_LOG_JSON"] = "1"  # the worker child process logs the same way
    root = logging.getLogger()
    if root.handlers:  # like logging.basicConfig: whoever configured logging first (a host program) wins
        return
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(JSONFormatter() if as_json else
                   logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(h)
    root.setLevel(level)
