"""Webhook receivers, mounted by ``ingest serve`` under ``/hooks/<name>``.

A notification only says *that* a source changed: once verified, it enqueues one poll of that
source (task ``ingest.dms_poll``) on the ``interactive`` lane, and nothing else in its body is
trusted. Anything unverified gets 401 and enqueues nothing. One table per receiver::

    [webhooks.<name>]
    scheme = "graph" | "drive" | "box" | "dropbox" | "hmac"
    source = "<a [sources.<name>] table>"
    secret = "env:NAME"            # graph: the subscription's clientState; drive: the channel token;
                                   # box: the primary signature key; dropbox: the app secret;
                                   # hmac: the shared key
    secondary_secret = "env:NAME"  # box only: the secondary key (key rotation)
    window = 600                   # seconds a signed timestamp may be off (box, hmac)

Schemes:
  * graph: ``?validationToken=`` handshake (echoed as text/plain); each notification's
    ``clientState`` must equal the secret (compared in constant time); a lifecycle
    ``reauthorizationRequired`` renews the subscription (``PATCH /subscriptions/{id}``) when the source
    is a Graph source. Replay key: subscription id + a digest of the body.
  * drive: ``X-Goog-Channel-Token`` must equal the secret; ``X-Goog-Resource-State: sync`` is the
    channel handshake (200, nothing enqueued). Replay key: channel id + ``X-Goog-Message-Number``.
  * box: ``BOX-SIGNATURE-PRIMARY`` or ``-SECONDARY`` = base64(HMAC-SHA256(key, body + timestamp))
    with ``BOX-DELIVERY-TIMESTAMP`` within the window; replay key ``BOX-DELIVERY-ID``.
  * dropbox: ``GET ?challenge=`` echoed (text/plain, nosniff); ``X-Dropbox-Signature`` =
    hex(HMAC-SHA256(app secret, body)). Replay key: a digest of the body.
  * hmac (generic, for MinIO/Nextcloud/S3 setups behind a relay): ``X-Ingest-Timestamp`` (unix
    seconds), ``X-Ingest-Delivery`` (unique id), ``X-Ingest-Signature: sha256=<hex>`` of
    HMAC-SHA256(secret, "<timestamp>.<delivery>." + body).

Replay protection keeps the keys seen (in memory, per server process) for twice the window.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.parse
from datetime import datetime

log = logging.getLogger("ingest.webhooks")

SCHEMES = ("graph", "drive", "box", "dropbox", "hmac")
MAX_BODY = 1 << 20


class Rejected(Exception):
    def __init__(self, why: str, status: str = "401 Unauthorized"):
        super().__init__(why)
        self.status = status


class ReplayGuard:
    """Delivery keys seen recently; a key seen again within ``ttl`` seconds is a replay."""

    def __init__(self, ttl: float, limit: int = 100_000):
        self.ttl, self.limit = ttl, limit
        self.seen: dict[str, float] = {}
        self.lock = threading.Lock()

    def first_time(self, key: str) -> bool:
        now = time.time()
        with self.lock:
            if len(self.seen) > self.limit:
                self.seen = {k: t for k, t in self.seen.items() if t > now}
            t = self.seen.get(key)
            if t is not None and t > now:
                return False
            self.seen[key] = now + self.ttl
            return True


def _eq(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


def _hmac(key: str, data: bytes, digest=hashlib.sha256) -> bytes:
    return hmac.new(key.encode(), data, digest).digest()


def _in_window(ts: float, window: float) -> bool:
    return abs(time.time() - ts) <= window


_broker: dict[str, str] = {}


def enqueue_poll(store_url: str | None, source: str) -> None:
    """One ``ingest.dms_poll`` task for ``source`` on the interactive lane (broker: ``$INGEST_BROKER``,
    else the embedded SQLite broker beside the store)."""
    import os

    from ingest.stores import store_path
    from workers.app import app, configure, embedded_broker

    url = os.environ.get("INGEST_BROKER") or embedded_broker(store_path(store_url))
    if _broker.get("url") != url:
        configure(url)  # queues, serializer, and the SQLite transport's registration
        _broker["url"] = url
    with app.connection_for_write(url) as conn:  # this broker, not a pooled connection to an older one
        from ingest.obs.lanes import queued_header

        app.send_task("ingest.dms_poll", args=[store_url, source], queue="interactive", connection=conn,
                      headers=queued_header())


class Receiver:
    def __init__(self, name: str, cfg: dict, store_url: str | None, full_cfg: dict, enqueue=None):
        from ingest.config import secret

        self.name, self.cfg, self.store_url, self.full_cfg = name, cfg, store_url, full_cfg
        self.scheme = cfg.get("scheme")
        if self.scheme not in SCHEMES:
            raise ValueError(f"webhook {name}: scheme must be one of {', '.join(SCHEMES)}, not {self.scheme!r}")
        self.source = cfg.get("source")
        if not self.source:
            raise ValueError(f"webhook {name}: source (the [sources.<name>] it triggers) is required")
        if not cfg.get("secret"):
            raise ValueError(f"webhook {name}: secret is required")
        self.secrets = [secret(cfg["secret"])] + ([secret(cfg["secondary_secret"])] if cfg.get("secondary_secret")
                                                  else [])
        self.window = float(cfg.get("window", 600))
        self.replay = ReplayGuard(2 * max(self.window, 600))
        self.enqueue = enqueue or (lambda: enqueue_poll(self.store_url, self.source))

    # -- verification per scheme; each returns (replay key or None if nothing to enqueue, response) --
    def verify(self, method: str, query: dict, headers: dict, body: bytes):
        return getattr(self, "_" + self.scheme)(method, query, headers, body)

    def _graph(self, method, query, headers, body):
        if "validationToken" in query:  # subscription handshake: echo within 10 s
            return None, ("200 OK", "text/plain", query["validationToken"].encode())
        try:
            items = json.loads(body)["value"]
            assert isinstance(items, list) and items
        except (ValueError, KeyError, TypeError, AssertionError):
            raise Rejected("graph: body is not a notification collection ({\"value\": [...]})",
                           "400 Bad Request") from None
        for n in items:
            if not _eq(n.get("clientState"), self.secrets[0]):
                raise Rejected("graph: clientState does not match")
        for n in items:
            if n.get("lifecycleEvent") == "reauthorizationRequired":
                self._renew_graph(n.get("subscriptionId"))
        key = f"{items[0].get('subscriptionId')}:{hashlib.sha256(body).hexdigest()}"
        return key, ("202 Accepted", "text/plain", b"")

    def _renew_graph(self, sub_id):
        from ingest.config import section

        src = section(self.full_cfg, f"sources.{self.source}")
        if src.get("type") == "graph" and sub_id:
            from .graph import renew_subscription

            renew_subscription(src, self.source, sub_id)

    def _drive(self, method, query, headers, body):
        if not _eq(headers.get("x-goog-channel-token"), self.secrets[0]):
            raise Rejected("drive: channel token does not match")
        state = headers.get("x-goog-resource-state")
        if state == "sync":
            return None, ("200 OK", "text/plain", b"")
        key = f"{headers.get('x-goog-channel-id')}:{headers.get('x-goog-message-number')}"
        return key, ("200 OK", "text/plain", b"")

    def _box(self, method, query, headers, body):
        ts = headers.get("box-delivery-timestamp") or ""
        try:
            when = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise Rejected("box: BOX-DELIVERY-TIMESTAMP missing or not ISO 8601") from None
        if not _in_window(when, self.window):
            raise Rejected("box: delivery timestamp outside the window")
        if headers.get("box-signature-version", "1") != "1" or \
                headers.get("box-signature-algorithm", "HmacSHA256") != "HmacSHA256":
            raise Rejected("box: unsupported signature version or algorithm")
        pairs = zip([headers.get("box-signature-primary"), headers.get("box-signature-secondary")], self.secrets)
        ok = any(_eq(sig, base64.b64encode(_hmac(key, body + ts.encode())).decode()) for sig, key in pairs if sig)
        if not ok:
            raise Rejected("box: signature does not match")
        return f"box:{headers.get('box-delivery-id')}", ("200 OK", "text/plain", b"")

    def _dropbox(self, method, query, headers, body):
        if method == "GET" and "challenge" in query:
            return None, ("200 OK", "text/plain", query["challenge"].encode())
        if not _eq(headers.get("x-dropbox-signature"), _hmac(self.secrets[0], body).hex()):
            raise Rejected("dropbox: signature does not match")
        return f"dropbox:{hashlib.sha256(body).hexdigest()}", ("200 OK", "text/plain", b"")

    def _hmac(self, method, query, headers, body):
        ts, delivery = headers.get("x-ingest-timestamp") or "", headers.get("x-ingest-delivery") or ""
        if not ts.isdigit() or not delivery:
            raise Rejected("hmac: X-Ingest-Timestamp (unix seconds) and X-Ingest-Delivery are required")
        if not _in_window(int(ts), self.window):
            raise Rejected("hmac: timestamp outside the window")
        want = "sha256=" + _hmac(self.secrets[0], f"{ts}.{delivery}.".encode() + body).hex()
        if not _eq(headers.get("x-ingest-signature"), want):
            raise Rejected("hmac: signature does not match")
        return f"hmac:{delivery}", ("200 OK", "text/plain", b"")

    def handle(self, method: str, query: dict, headers: dict, body: bytes):
        key, response = self.verify(method, query, headers, body)
        if key is not None:
            if not self.replay.first_time(key):
                log.warning("webhook %s: replayed delivery ignored", self.name)
                return ("200 OK", "text/plain", b"replay ignored")  # acknowledged, not enqueued
            self.enqueue()
            log.info("webhook %s: poll of %s enqueued", self.name, self.source)
        return response


def app(store_url: str | None, cfg: dict, enqueue=None):
    """WSGI app for ``ingest serve``: ``/hooks/<name>`` per ``[webhooks.<name>]``."""
    from ingest.config import section

    receivers = {name: Receiver(name, table, store_url, cfg, enqueue and (lambda s=table["source"]: enqueue(s)))
                 for name, table in section(cfg, "webhooks").items()}

    def wsgi(environ, start_response):
        name = environ.get("PATH_INFO", "/").strip("/")
        r = receivers.get(name)
        if r is None:
            return _reply(start_response, "404 Not Found", "text/plain", f"no webhook {name!r}".encode())
        method = environ["REQUEST_METHOD"]
        n = int(environ.get("CONTENT_LENGTH") or 0)
        if n > MAX_BODY:
            return _reply(start_response, "413 Payload Too Large", "text/plain", b"body too large")
        body = environ["wsgi.input"].read(n) if n else b""
        query = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        try:
            return _reply(start_response, *r.handle(method, query, headers, body))
        except Rejected as e:
            log.warning("webhook %s: rejected: %s", name, e)
            return _reply(start_response, e.status, "text/plain", str(e).encode())

    return wsgi


def _reply(start_response, status, ctype, data: bytes):
    hdrs = [("Content-Type", ctype), ("Content-Length", str(len(data)))]
    if ctype == "text/plain":
        hdrs.append(("X-Content-Type-Options", "nosniff"))
    start_response(status, hdrs)
    return [data]
