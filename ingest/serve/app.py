"""``ingest serve``: one HTTP server, many small WSGI apps mounted by path prefix.

Each feature contributes one mount in :data:`MOUNTS` (prefix -> "module:factory"); the
factory takes ``(store_url, cfg)`` and returns a WSGI app that sees the path below its
prefix in ``PATH_INFO``. Factories import lazily, so an unused feature costs nothing.
Served by waitress: one I/O thread buffers every request, headers and body, before a worker
thread sees it, so a slow or trickling client holds a socket, never a worker; a request that
takes longer than ``request_timeout`` to arrive is dropped, as is a connection idle for
``channel_timeout``. ``[serve]`` keys: ``host``, ``port``, ``threads`` (16), ``request_timeout`` (30 s),
``channel_timeout`` (60 s), ``connection_limit`` (1000), ``max_body`` (1 MiB).
"""
from __future__ import annotations

import importlib
import json
import logging
import threading
import time

from ingest.config import section
from ingest.sources import webhooks

log = logging.getLogger("ingest.serve.app")

# Longest prefix wins. Add one line per feature.
MOUNTS: dict[str, str] = {
    "/hooks": "ingest.serve.app:hooks_app",
    "/metrics": "ingest.serve.obs_http:metrics_app",
    "/search": "ingest.serve.search_http:make_app",
    "/facets": "ingest.serve.search_http:make_facets_app",
    "/": "ingest.serve.obs_http:status_app",
}


# The factories that need the queue: this layer (above workers/) resolves the broker and hands it, or an
# enqueue callable, to the apps below it, so sources/ and obs/ never import workers/.
def hooks_app(store_url: str | None, cfg: dict):
    """``/hooks``: the webhook receivers, enqueueing polls through the queue's producer."""
    from workers.lanes import poll_enqueuer

    return webhooks.app(store_url, cfg, enqueue=poll_enqueuer(store_url))


def json_response(start_response, status: str, body, headers: list | None = None):
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
                   + (headers or []))
    return [data]


class Dispatcher:
    def __init__(self, store_url: str | None, cfg: dict, mounts: dict[str, str] | None = None):
        self.apps = {}
        for prefix, target in sorted((mounts if mounts is not None else MOUNTS).items(),
                                     key=lambda kv: -len(kv[0])):
            mod, _, fn = target.partition(":")
            self.apps[prefix.rstrip("/")] = getattr(importlib.import_module(mod), fn)(store_url, cfg)

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        for prefix, app in self.apps.items():
            if prefix == "" or path == prefix or path.startswith(prefix + "/"):
                environ = dict(environ)
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix):] or "/"
                return app(environ, start_response)
        return json_response(start_response, "404 Not Found", {"error": f"no endpoint at {path}"})


SERVER_DEFAULTS = {"threads": 16, "request_timeout": 30.0, "channel_timeout": 60.0, "connection_limit": 1000,
                   "max_body": 1 << 20}


class Server:
    """A waitress server with a bound on the time one request may take to arrive."""

    def __init__(self, app, host: str, port: int, *, threads: int, request_timeout: float, channel_timeout: float,
                 connection_limit: int, max_body: int):
        from waitress.channel import HTTPChannel
        from waitress.server import TcpWSGIServer

        class Channel(HTTPChannel):
            started = None  # when the request being received began to arrive

            def received(self, data):
                if self.request is None and data and self.started is None:
                    self.started = time.monotonic()
                out = super().received(data)
                if self.request is None:  # complete (handed to a worker) or nothing pending
                    self.started = None
                return out

        class Tcp(TcpWSGIServer):
            channel_class = Channel

            def maintenance(self, now):
                super().maintenance(now)
                cutoff = time.monotonic() - request_timeout
                for ch in list(self.active_channels.values()):
                    if ch.started is not None and ch.started < cutoff and not ch.requests:
                        log.warning("serve: dropping a client whose request took over %ss to arrive",
                                    request_timeout)
                        ch.will_close = True
                        ch.started = None

        self._map: dict = {}
        self._server = Tcp(app, map=self._map, host=host, port=port, threads=threads, channel_timeout=channel_timeout,
                           cleanup_interval=max(1, min(int(request_timeout // 3) or 1, 10)),
                           connection_limit=connection_limit, max_request_body_size=max_body,
                           asyncore_use_poll=True, ident="ingest", expose_tracebacks=False)
        self._thread: threading.Thread | None = None

    @property
    def bind_addr(self):
        return self._server.effective_host, self._server.effective_port

    def prepare(self) -> None:
        """Bound and listening already (kept for callers written for cheroot)."""

    def serve(self) -> None:
        self._server.run()

    def start(self) -> None:  # blocks, like cheroot's
        self.serve()

    def start_background(self) -> "Server":
        self._thread = threading.Thread(target=self.serve, name="ingest-serve", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        srv = self._server
        for d in list(self._map.values()):
            try:
                d.close()
            except Exception:  # a channel closing under us
                pass
        self._map.clear()
        srv.task_dispatcher.shutdown(timeout=5)
        if self._thread is not None:
            self._thread.join(5)


def make_server(store_url: str | None, cfg: dict, host: str = "127.0.0.1", port: int = 8765,
                mounts: dict[str, str] | None = None) -> Server:
    s = section(cfg, "serve")
    opts = {k: type(v)(s.get(k, v)) for k, v in SERVER_DEFAULTS.items()}
    return Server(Dispatcher(store_url, cfg, mounts), host, port, **opts)


def serve(store_url: str | None, cfg: dict, host: str | None = None, port: int | None = None) -> None:
    s = section(cfg, "serve")
    server = make_server(store_url, cfg, host or s.get("host", "127.0.0.1"), int(port or s.get("port", 8765)))
    log.warning("serving on http://%s:%s", *server.bind_addr[:2])
    try:
        server.start()
    finally:
        server.stop()


def serve_in_background(store_url: str | None, cfg: dict, port: int, host: str = "127.0.0.1"):
    """``ingest worker --metrics-port``: the same metrics from a worker host at ``/metrics``, served
    from a background thread. The caller stops the server (its pool threads are not daemons)."""
    from cheroot import wsgi

    server = wsgi.Server((host, port), Dispatcher(store_url, cfg, {"/metrics": MOUNTS["/metrics"]}),
                         numthreads=2)
    server.prepare()
    threading.Thread(target=server.serve, name="metrics", daemon=True).start()
    return server
