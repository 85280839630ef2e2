"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, tuned.

* polled every 50 ms (kombu's default of 1 s would dominate freshness), and the
  option is kept away from ``create_engine`` (which rejects unknown keywords);
* the SQLite file in WAL mode with a busy timeout, so producers and the worker
  do not trip over each other's locks.

``workers.app`` maps ``sqla+sqlite:///...`` URLs onto this transport through
kombu's alias table.
"""
from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel as _Channel
from kombu.transport.sqlalchemy import Transport as _Transport

POLL_SECONDS = 0.05


class Channel(_Channel):
    pass


class Transport(_Transport):
    Channel = Channel
    polling_interval = POLL_SECONDS

    def __init__(self, client, **kwargs):
        super().__init__(client, **kwargs)
        self.polling_interval = POLL_SECONDS


def _engine_from_config(self):
    from sqlalchemy import create_engine, event

    conninfo = self.connection.client
    engine = create_engine(conninfo.hostname, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    return engine


Channel._engine_from_config = _engine_from_config


def register() -> None:
    TRANSPORT_ALIASES["sqla"] = "workers.broker:Transport"
