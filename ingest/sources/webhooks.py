"""Webhook receivers, mounted by ``ingest serve`` under ``/hooks/<name>``.

A notification only says *that* a source changed: once verified, it enqueues one poll of that
source (task ``ingest.poll``, through the enqueue callable ``ingest serve`` gives it) on the
``interactive`` lane, and nothing else in its body is trusted. Anything unverified gets 401 and enqueues nothing. One table per receiver::

    [webhooks.<name>]
    scheme = "graph" | "drive" | "box" | "dropbox" | "hmac" | "nextcloud" | "standard" | "github"
    source = "<a [sources.<name>] table>"
    secret = "env:NAME"            # graph: the subscription's clientState; drive: the channel token;
                                   # box: the primary signature key; dropbox: the app secret;
                                   # hmac, github: the shared key; nextcloud: the header's value;
                                   # standard: the whsec_... signing secret
    secondary_secret = "env:NAME"  # box, standard, github: a second key accepted too (key rotation)
    header = "X-Ingest-Secret"     # nextcloud only: the header its authData sets (authMethod "header")
    window = 600                   # seconds a signed timestamp may be off (box, hmac; standard: 300)

Schemes:
  * graph: ``?validationToken=`` handshake (echoed as text/plain); each notification's
    ``clientState`` must equal the secret (compared in constant time); a lifecycle
    ``reauthorizationRequired`` renews the subscription (``PATCH /subscriptions/{id}``) when the source
    is a Graph source. Replay key: subscription id + a digest of the body.
  * drive: ``X-Goog-Channel-Token`` must equal the secret; ``X-Goog-Resource-State: sync`` is the
    channel handshake (200, nothing enqueued). Replay key: channel id + ``X-Goog-Message-Number``.
  * box: ``BOX-SIGNATURE-PRIMARY`` or ``-SECONDARY`` = base64(HMAC-SHA256(key, body + timestamp))
    with ``BOX-DELIVERY-TIMESTAMP`` within the window. Replay key: a digest of the signed input (body and
    timestamp), never the unsigned ``BOX-DELIVERY-ID`` (a replay with a new id is still a replay).
  * dropbox: ``GET ?challenge=`` echoed (text/plain, nosniff); ``X-Dropbox-Signature`` =
    hex(HMAC-SHA256(app secret, body)). Replay key: a digest of the body.
  * hmac (generic, for MinIO/Nextcloud/S3 setups behind a relay): ``X-Ingest-Timestamp`` (unix
    seconds), ``X-Ingest-Delivery`` (unique id), ``X-Ingest-Signature: sha256=<hex>`` of
    HMAC-SHA256(secret, "<timestamp>.<delivery>." + body).
  * nextcloud (the ``webhook_listeners`` app, registered with ``authMethod: "header"`` and
    ``authData: {"<header>": "<secret>"}``): the configured header must equal the secret (checked before
    the body is read). Nextcloud sends no Content-Type, timestamp or delivery id; replay key: a digest of
    the body (which carries the event and its ``time``).
  * standard (Standard Webhooks): ``webhook-id``, ``webhook-timestamp`` (unix seconds, within the window,
    default 300 s) and ``webhook-signature``: space-separated ``v1,<base64 HMAC-SHA256(key,
    "<id>.<timestamp>." + body)>`` entries, any one matching (rotation; other versions such as ``v1a`` are
    skipped); the key is the base64 after ``whsec_``. Replay key: ``webhook-id`` (signed).
  * github: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``. GitHub signs no timestamp
    or id, so a delivery is a replay when its ``X-GitHub-Delivery`` *or* its body digest was seen.

Replay protection keeps the keys seen (in memory, per server process) for twice the window (at least
20 minutes). A replay after that enqueues one more poll, which fetches only what changed.
Malformed requests get a 400 naming what is wrong, never a 500.
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
from typing import Callable


log = logging.getLogger("ingest.webhooks")

SCHEMES = ("graph", "drive", "box", "dropbox", "hmac", "nextcloud", "standard", "github")
HEADER_SCHEMES = ("drive", "nextcloud")  # verified from headers alone, before the body is read
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

    def first_time(self, *keys: str) -> bool:
        """False when any of ``keys`` was seen within the ttl; records them all either way."""
        now = time.time()
        with self.lock:
            if len(self.seen) > self.limit:
                self.seen = {k: t for k, t in self.seen.items() if t > now}
            fresh = all(self.seen.get(k, 0) <= now for k in keys)
            for k in keys:
                self.seen[k] = now + self.ttl
            return fresh

    def forget(self, *keys: str) -> None:
        with self.lock:
            for k in keys:
                self.seen.pop(k, None)


def _eq(a, b: str) -> bool:
    return isinstance(a, str) and hmac.compare_digest(a.encode(), b.encode())


def _unix_seconds(value: str | None, what: str) -> int:
    """An ASCII decimal timestamp (``str.isdigit`` also accepts ``²`` and other digits ``int`` refuses)."""
    v = value or ""
    if not (v.isascii() and v.isdigit() and len(v) <= 12):
        raise Rejected(f"{what} must be unix seconds (ASCII digits), got {v[:40]!r}", "400 Bad Request")
    return int(v)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()


def _hmac(key: str, data: bytes, digest=hashlib.sha256) -> bytes:
    return hmac.new(key.encode(), data, digest).digest()


def _in_window(ts: float, window: float) -> bool:
    return abs(time.time() - ts) <= window


class Receiver:
    def __init__(self, name: str, cfg: dict, store_url: str | None, full_cfg: dict,
                 enqueue: Callable[[], None] | None = None):
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
        self.window = float(cfg.get("window", 300 if self.scheme == "standard" else 600))
        self.header = str(cfg.get("header", "X-Ingest-Secret")).lower()
        if self.scheme == "standard":
            self.keys = [_whsec(k, name) for k in self.secrets]
        self.replay = ReplayGuard(2 * max(self.window, 600))
        self.enqueue = enqueue or _no_queue

    # -- verification per scheme; each returns (replay keys, or () if nothing to enqueue; response) --
    def verify_headers(self, method: str, headers: dict) -> None:
        """The schemes whose proof is a header alone: checked before the body is read."""
        if self.scheme == "drive" and not _eq(headers.get("x-goog-channel-token"), self.secrets[0]):
            raise Rejected("drive: channel token does not match")
        if self.scheme == "nextcloud" and not _eq(headers.get(self.header), self.secrets[0]):
            raise Rejected(f"nextcloud: header {self.header} does not match")

    def verify(self, method: str, query: dict, headers: dict, body: bytes):
        self.verify_headers(method, headers)
        return getattr(self, "_" + self.scheme)(method, query, headers, body)

    def _graph(self, method, query, headers, body):
        if "validationToken" in query:  # subscription handshake: echo within 10 s
            return (), ("200 OK", "text/plain", query["validationToken"].encode())
        try:
            items = json.loads(body)["value"]
            ok = isinstance(items, list) and items and all(isinstance(n, dict) for n in items)
        except (ValueError, KeyError, TypeError, RecursionError):
            ok = False
        if not ok:
            raise Rejected("graph: body is not a notification collection ({\"value\": [{...}, ...]})",
                           "400 Bad Request") from None
        for n in items:
            if not _eq(n.get("clientState"), self.secrets[0]):
                raise Rejected("graph: clientState does not match")
        for n in items:
            if n.get("lifecycleEvent") == "reauthorizationRequired":
                try:
                    self._renew_graph(n.get("subscriptionId"))
                except Exception as e:  # the notification itself is fine: still poll
                    log.error("webhook %s: renewing subscription failed: %s", self.name, e)
        return (f"graph:{_digest(body)}",), ("202 Accepted", "text/plain", b"")

    def _renew_graph(self, sub_id):
        from ingest.config import section

        src = section(self.full_cfg, f"sources.{self.source}")
        if src.get("type") == "graph" and sub_id:
            from ingest.sources.graph import renew_subscription

            renew_subscription(src, self.source, sub_id)

    def _drive(self, method, query, headers, body):  # the channel token was checked in verify_headers
        if headers.get("x-goog-resource-state") == "sync":
            return (), ("200 OK", "text/plain", b"")
        key = f"drive:{headers.get('x-goog-channel-id')}:{headers.get('x-goog-message-number')}"
        return (key,), ("200 OK", "text/plain", b"")

    def _box(self, method, query, headers, body):
        ts = headers.get("box-delivery-timestamp") or ""
        try:
            when = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError, OSError):
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
        # BOX-DELIVERY-ID is not signed: a replay may carry any id. The signed input is the key.
        return (f"box:{_digest(body, ts.encode())}",), ("200 OK", "text/plain", b"")

    def _dropbox(self, method, query, headers, body):
        if method == "GET" and "challenge" in query:
            return (), ("200 OK", "text/plain", query["challenge"].encode())
        if not _eq(headers.get("x-dropbox-signature"), _hmac(self.secrets[0], body).hex()):
            raise Rejected("dropbox: signature does not match")
        return (f"dropbox:{_digest(body)}",), ("200 OK", "text/plain", b"")

    def _hmac(self, method, query, headers, body):
        ts, delivery = headers.get("x-ingest-timestamp"), headers.get("x-ingest-delivery") or ""
        if not delivery:
            raise Rejected("hmac: X-Ingest-Timestamp (unix seconds) and X-Ingest-Delivery are required")
        when = _unix_seconds(ts, "hmac: X-Ingest-Timestamp")
        if not _in_window(when, self.window):
            raise Rejected("hmac: timestamp outside the window")
        want = "sha256=" + _hmac(self.secrets[0], f"{ts}.{delivery}.".encode() + body).hex()
        if not _eq(headers.get("x-ingest-signature"), want):
            raise Rejected("hmac: signature does not match")
        return (f"hmac:{delivery}",), ("200 OK", "text/plain", b"")

    def _nextcloud(self, method, query, headers, body):  # the header secret was checked in verify_headers
        return (f"nextcloud:{_digest(body)}",), ("200 OK", "text/plain", b"")

    def _standard(self, method, query, headers, body):
        msg_id, ts, sigs = headers.get("webhook-id"), headers.get("webhook-timestamp"), headers.get("webhook-signature")
        if not (msg_id and ts and sigs):
            raise Rejected("standard: webhook-id, webhook-timestamp and webhook-signature are required")
        if not _in_window(_unix_seconds(ts, "standard: webhook-timestamp"), self.window):
            raise Rejected("standard: webhook-timestamp outside the window")
        signed = f"{msg_id}.{ts}.".encode() + body
        wants = ["v1," + base64.b64encode(hmac.new(k, signed, hashlib.sha256).digest()).decode() for k in self.keys]
        if not any(_eq(sig, want) for sig in sigs.split(" ") for want in wants):
            raise Rejected("standard: no webhook-signature matches")
        return (f"standard:{msg_id}",), ("200 OK", "text/plain", b"")

    def _github(self, method, query, headers, body):
        sig = headers.get("x-hub-signature-256")
        if not any(_eq(sig, "sha256=" + _hmac(k, body).hex()) for k in self.secrets):
            raise Rejected("github: X-Hub-Signature-256 does not match")
        keys = [f"github:{_digest(body)}"]
        if headers.get("x-github-delivery"):
            keys.append(f"github:{headers['x-github-delivery']}")
        return tuple(keys), ("200 OK", "text/plain", b"")

    def handle(self, method: str, query: dict, headers: dict, body: bytes):
        keys, response = self.verify(method, query, headers, body)
        if keys:
            if not self.replay.first_time(*keys):
                log.warning("webhook %s: replayed delivery ignored", self.name)
                return ("200 OK", "text/plain", b"replay ignored")  # acknowledged, not enqueued
            try:
                self.enqueue()
            except Exception as e:  # broker down: the sender retries on 5xx
                self.replay.forget(*keys)
                log.error("webhook %s: could not enqueue a poll of %s: %s", self.name, self.source, e)
                return ("503 Service Unavailable", "text/plain", b"could not enqueue; retry later")
            log.info("webhook %s: poll of %s enqueued", self.name, self.source)
        return response


def _whsec(value: str, name: str) -> bytes:
    """A Standard Webhooks signing secret: base64 after an optional ``whsec_`` prefix."""
    raw = value[len("whsec_"):] if value.startswith("whsec_") else value
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except ValueError:
        key = b""
    if not key:
        raise ValueError(f"webhook {name}: a standard secret is whsec_ followed by base64, e.g. whsec_MfKQ9r8G...")
    return key


def _no_queue() -> None:
    raise RuntimeError("no queue to enqueue into (the receiver was built without one)")


def app(store_url: str | None, cfg: dict, enqueue: Callable[[str], None] | None = None):
    """WSGI app for ``/hooks/<name>`` per ``[webhooks.<name>]``. ``enqueue(source)`` queues one poll
    of a source; the layer that serves this app gives it (``ingest serve``: the queue's producer,
    ``workers.lanes.poll_enqueuer``), so the receivers never reach up into the queue."""
    from ingest.config import section

    receivers = {name: Receiver(name, table, store_url, cfg, enqueue and (lambda s=table["source"]: enqueue(s)))
                 for name, table in section(cfg, "webhooks").items()}

    def wsgi(environ, start_response):
        name = environ.get("PATH_INFO", "/").strip("/")
        r = receivers.get(name)
        if r is None:
            return _reply(start_response, "404 Not Found", "text/plain", b"no such webhook")
        try:
            return _reply(start_response, *_receive(r, environ))
        except Rejected as e:
            log.warning("webhook %s: rejected: %s", name, e)
            return _reply(start_response, e.status, "text/plain", str(e).encode())

    return wsgi


def _receive(r: Receiver, environ):
    method = environ.get("REQUEST_METHOD", "GET")
    headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
    r.verify_headers(method, headers)  # a wrong header secret costs no body read
    cl = environ.get("CONTENT_LENGTH") or "0"
    if not (cl.isascii() and cl.isdigit()):
        raise Rejected("Content-Length is not a number", "400 Bad Request")
    n = int(cl)
    if n > MAX_BODY:
        raise Rejected("body too large", "413 Payload Too Large")
    body = environ["wsgi.input"].read(n) if n else b""
    query = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    return r.handle(method, query, headers, body)


def _reply(start_response, status, ctype, data: bytes):
    hdrs = [("Content-Type", ctype), ("Content-Length", str(len(data)))]
    if ctype == "text/plain":
        hdrs.append(("X-Content-Type-Options", "nosniff"))
    start_response(status, hdrs)
    return [data]
