"""``ingest serve``: one HTTP server, many small WSGI apps mounted by path prefix.

Each feature contributes one mount in :data:`MOUNTS` (prefix -> "module:factory"); the
factory takes ``(store_url, cfg)`` and returns a WSGI app that sees the path below its
prefix in ``PATH_INFO``. Factories import lazily, so an unused feature costs nothing.
Served by cheroot (threaded, pure Python).
"""
from __future__ import annotations

import importlib
import json
import logging

log = logging.getLogger("ingest.serve")

# Longest prefix wins. Add one line per feature.
MOUNTS: dict[str, str] = {
    "/hooks": "ingest.sources.webhooks:app",
    "/metrics": "ingest.obs.metrics:app",
    "/search": "ingest.search_http:make_app",
    "/facets": "ingest.search_http:make_facets_app",
    "/": "ingest.obs.page:app",
}


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


def make_server(store_url: str | None, cfg: dict, host: str = "127.0.0.1", port: int = 8765,
                mounts: dict[str, str] | None = None):
    from cheroot import wsgi

    return wsgi.Server((host, port), Dispatcher(store_url, cfg, mounts), numthreads=8)


def serve(store_url: str | None, cfg: dict, host: str | None = None, port: int | None = None) -> None:
    from .config import section

    s = section(cfg, "serve")
    server = make_server(store_url, cfg, host or s.get("host", "127.0.0.1"), int(port or s.get("port", 8765)))
    log.warning("serving on http://%s:%s", *server.bind_addr[:2])
    try:
        server.start()
    finally:
        server.stop()
