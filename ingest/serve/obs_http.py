"""The observability endpoints ``ingest serve`` mounts: ``/metrics`` (Prometheus, from
``ingest.obs.metrics``) and ``/`` (the status page, ``ingest.obs.page``), both authenticated with
the bearer tokens of ``[serve.tokens]`` (``ingest.serve.auth``); the page also takes a sign-in
cookie holding the same token."""
from __future__ import annotations

import html
import urllib.parse

from ingest.config import section
from ingest.obs import page
from ingest.obs.metrics import registry_for
from ingest.obs.page import login_page
from ingest.obs.quality import rules
from ingest.serve.auth import principal_for_token, principal_from_request
from ingest.stores import open_store
from workers.app import resolve_broker

COOKIE = "ingest_token"
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")


def metrics_app(store_url: str | None, cfg: dict, *, public: bool | None = None):
    """WSGI app for ``/metrics`` (mounted by ``ingest serve``): ``ingest.obs.metrics``' collector."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    rules(cfg)  # a bad [quality.alerts] table fails `ingest serve` at start, not every scrape
    s = section(cfg, "serve.metrics")
    public = bool(s.get("public", False)) if public is None else public
    reg = registry_for(open_store(store_url), cfg, resolve_broker(store_url), float(s.get("refresh_seconds", 60)))

    def wsgi(environ, start_response):
        if environ.get("PATH_INFO", "/") not in ("/", ""):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        if not public and principal_from_request(environ, cfg) is None:
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
            return [b"a bearer token from [serve.tokens] is required (or set [serve.metrics] public = true)\n"]
        data = generate_latest(reg)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST), ("Content-Length", str(len(data)))])
        return [data]

    return wsgi


def status_app(store_url: str | None, cfg: dict):
    """WSGI app for ``/`` (mounted by ``ingest serve``): the status page (``ingest.obs.page``)."""
    store = open_store(store_url)
    broker = resolve_broker(store_url)
    allowed = section(cfg, "serve.status").get("principals")

    def reply(start_response, status, body: str, headers=()):
        data = body.encode()
        start_response(status, [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(data))),
                                 ("Content-Security-Policy", CSP), ("X-Content-Type-Options", "nosniff"),
                                 ("Cache-Control", "no-store"), ("Referrer-Policy", "no-referrer"), *headers])
        return [data]

    def base(environ) -> str:
        return (environ.get("SCRIPT_NAME", "") or "") + "/"

    def wsgi(environ, start_response):
        path, method = environ.get("PATH_INFO", "/") or "/", environ.get("REQUEST_METHOD", "GET")
        if path == "/login":
            if method == "POST":
                n = min(int(environ.get("CONTENT_LENGTH") or 0), 8192)
                form = urllib.parse.parse_qs(environ["wsgi.input"].read(n).decode("utf-8", "replace"))
                token = (form.get("token") or [""])[0]
                if principal_for_token(token, cfg) is None:
                    return reply(start_response, "401 Unauthorized",
                                 login_page("That token is not known."))
                secure = "; Secure" if environ.get("wsgi.url_scheme") == "https" else ""
                cookie = (f"{COOKIE}={urllib.parse.quote(token, safe='')}; HttpOnly; SameSite=Strict; "
                          f"Path={base(environ)}{secure}")
                return reply(start_response, "303 See Other", "", [("Set-Cookie", cookie),
                                                                   ("Location", base(environ))])
            return reply(start_response, "200 OK", login_page(""))
        if path != "/":
            return reply(start_response, "404 Not Found", "<p>not found</p>")
        if method not in ("GET", "HEAD"):
            return reply(start_response, "405 Method Not Allowed", "<p>read-only</p>", [("Allow", "GET, HEAD")])
        principal = principal_from_request(environ, cfg)
        if principal is None:
            from http.cookies import CookieError, SimpleCookie

            try:
                c = SimpleCookie(environ.get("HTTP_COOKIE", ""))
            except CookieError:
                c = SimpleCookie()
            if COOKIE in c:
                principal = principal_for_token(urllib.parse.unquote(c[COOKIE].value), cfg)
        if principal is None:
            return reply(start_response, "401 Unauthorized",
                         login_page("Sign in with a token from [serve.tokens]."),
                         [("WWW-Authenticate", "Bearer")])
        if allowed is not None and principal not in allowed:
            return reply(start_response, "403 Forbidden", f"<p>{html.escape(principal)} may not see the status "
                         "page ([serve.status] principals)</p>")
        return reply(start_response, "200 OK", page.render(page.state(store, cfg, broker), principal))

    return wsgi
