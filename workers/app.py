"""The Celery app. Broker from ``INGEST_BROKER`` (set by ``ingest worker --broker``).

Embedded default: ``sqla+sqlite:///<store dir>/<store name>.broker.sqlite`` (kombu's
SQLAlchemy transport on SQLite: no server). Scale-out: ``redis://...``.

Lanes are queues: ``interactive`` (watcher and webhook changes), ``bulk`` (initial
crawls, backfills), ``maintenance`` (rescans).
"""
from __future__ import annotations

import os

os.environ.setdefault("DO_NOT_TRACK", "1")  # unstructured telemetry stalls without network
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from celery import Celery
from kombu import Exchange, Queue

from ingest.config import settings

LANES = ("interactive", "bulk", "maintenance")

app = Celery("ingest", include=["workers.tasks"])


def embedded_broker(store_path) -> str:
    from pathlib import Path

    p = Path(store_path)
    return f"sqla+sqlite:///{p.with_name(p.name + '.broker.sqlite')}"


def resolve_broker(store_url: str | None = None, broker_url: str | None = None, *,
                   env: bool = True) -> str:
    """The one rule for which broker to use: ``broker_url`` if given, else ``$INGEST_BROKER``
    (``env``), else the embedded SQLite broker beside a SQLite store (a PostgreSQL store has no
    file to put it beside: a :class:`ValueError` asks for a broker)."""
    url = broker_url or (settings().broker if env else None)
    if url:
        return url
    from ingest.stores import is_postgres, store_path

    if is_postgres(store_url):
        raise ValueError("a PostgreSQL store needs --broker (e.g. redis://host:6379/0): the embedded broker "
                         "is a file beside a SQLite store")
    return embedded_broker(store_path(store_url))


def visibility_timeout() -> int:
    return settings().visibility_timeout_s


def configure(broker_url: str | None = None) -> Celery:
    s = settings()
    url = resolve_broker(None, broker_url)
    if app.conf.broker_url and app.conf.broker_url != url and app._pool is not None:
        # another broker than before (tests, tools): drop connections to the old one
        app._pool.force_close_all()
        app._pool = None
        app.amqp._producer_pool = None
    sql = url.startswith("sqla+")
    redis = url.startswith(("redis://", "rediss://", "redis+socket://"))
    if sql:
        from .broker import register

        register()
    app.conf.update(
        broker_url=url,
        task_queues=[Queue(name, Exchange(name, type="direct"), routing_key=name) for name in LANES],
        task_default_queue="bulk",
        task_default_exchange="bulk",
        task_default_routing_key="bulk",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        # Redis: one reserved task per process, so an interactive change never queues behind
        # prefetched bulk work in a busy worker
        worker_prefetch_multiplier=s.prefetch or (1 if redis else 4),
        worker_hijack_root_logger=False,
        worker_max_tasks_per_child=s.max_tasks_per_child,  # recycle
        worker_max_memory_per_child=s.max_memory_per_child_mb * 1024,  # KiB
        worker_proc_alive_timeout=180,  # children load the model and parsers before their first task
        worker_enable_remote_control=not sql,  # the SQL transport has no fan-out
        broker_connection_retry_on_startup=True,
        task_time_limit=int(s.task_time_limit),
        task_soft_time_limit=int(s.soft_time_limit),
    )
    if redis:
        app.conf.update(
            broker_transport_options={
                # lanes in strict order: BRPOP on [interactive, bulk, maintenance] takes the first
                # non-empty one, so an interactive change goes ahead of any bulk backlog
                "queue_order_strategy": "priority",
                # an unacknowledged task (its worker was killed) is delivered again after this;
                # longer than the task time limit, so a slow task is not run twice
                "visibility_timeout": visibility_timeout(),
                "unacked_restore_throttle": 1,
                # the restore scan's lock: if a worker dies holding it, others wait this long
                "unacked_mutex_expire": 60,
                "unacked_restore_interval": max(1, min(10, visibility_timeout() // 2)),
            },
            broker_connection_retry=True,
            broker_connection_max_retries=None,  # a Redis restart is waited out, not fatal
        )
    return app


configure()
