"""The connector contract every DMS source (and the folder source) implements.

* ``changes(cursor) -> (events, next_cursor)``: what changed since ``cursor`` (``None``: everything,
  i.e. an initial crawl or a full resync), as :class:`ingest.sources.base.ChangeEvent`, the one event
  type of every source (``source``: the connector's ``<type>:<name>``; ``key``: the item id). Raises :class:`CursorExpired` when
  the system no longer accepts the cursor (Graph 410, Drive/Box/Dropbox "reset"); the caller then
  resyncs from ``None``.
* ``fetch(ref) -> RawDocument | None``: the item's metadata, ACL and version, with its bytes behind
  :meth:`RawDocument.open` (downloaded only when the content is needed); ``None`` when it is gone.
* ``list_ids() -> set[str]``: every live item id, for pruning. Raises :class:`ListingError` (never
  returns a partial set) when any part of the listing failed, so a failed listing prunes nothing.
* ``acl(ref) -> ACL``: permissions only (permission-only sync).

Ids are the DMS's own item ids (not paths), so a move is a metadata update.
Principal tokens follow DESIGN.md: ``user:<source>:<id>``, ``group:<source>:<id>``, ``everyone``.
"""
from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import IO, Callable, Iterable, Protocol

from acl.model import ACL, EVERYONE, group_token, user_token

from ingest.sources.base import ACL_CHANGE, DELETE, UPSERT, ChangeEvent  # noqa: F401  (the connectors' names)

log = logging.getLogger("ingest.sources.connector")


class ConnectorError(RuntimeError):
    """A source could not be read (HTTP error, bad response); the message names the source and call."""


class CursorExpired(ConnectorError):
    """The saved cursor is no longer valid: resync from scratch (no fetch of unchanged items)."""


class ListingError(ConnectorError):
    """The id listing failed (or is incomplete): prune nothing."""


@dataclass
class RawDocument:
    id: str
    name: str  # file name (its extension helps the parser's limit messages only)
    uri: str  # where a user opens it (changes on a move)
    version: str  # etag / revision / content hash
    acl: ACL
    size: int | None = None
    mtime_ns: int | None = None
    metadata: dict = field(default_factory=dict)
    content: bytes | None = None
    labels: list = field(default_factory=list)  # source labels (label sidecars: ``<name>.labels[.json]``)
    label_error: str | None = None  # the labels could not be read (the document fails with bad-labels)
    opener: Callable[[], IO[bytes]] | None = None  # a stream of the bytes (downloads lazily)

    def open(self) -> IO[bytes]:
        if self.content is not None:
            import io

            return io.BytesIO(self.content)
        if self.opener is None:
            raise ConnectorError(f"{self.uri}: no content available")
        return self.opener()


class Connector(Protocol):
    name: str  # the configured source name ([sources.<name>])
    source: str  # registry key, "<type>:<name>"

    def changes(self, cursor: str | None) -> tuple[list[ChangeEvent], str]: ...
    def fetch(self, ref: str) -> RawDocument | None: ...
    def list_ids(self) -> set[str]: ...
    def acl(self, ref: str) -> ACL: ...


# -- labels sidecars, as a folder has them ----------------------------------------------------
def sidecar_labels(read, path: str) -> tuple[list[str], str | None]:
    """(labels, error) from the sidecars of the item at ``path`` (``<path>.labels``,
    ``<path>.labels.json``), as a folder file has them. ``read(sidecar path, limit)`` returns the
    sidecar's bytes (at most ``limit`` + 1), or None when there is none. A sidecar over the limit or
    unparsable is an error (the document fails with ``bad-labels``), never silently no labels."""
    from ingest.sources.labels import SIDECAR_SUFFIXES, parse_sidecar
    from ingest.sources.safefs import MAX_SIDECAR_BYTES

    labels: list[str] = []
    try:
        for suffix in SIDECAR_SUFFIXES:
            data = read(path + suffix, MAX_SIDECAR_BYTES)
            if data is None:
                continue
            if len(data) > MAX_SIDECAR_BYTES:
                raise ValueError(f"{path}{suffix}: over the {MAX_SIDECAR_BYTES} byte limit for labels")
            labels += parse_sidecar(data, path + suffix)
    except (ValueError, ConnectorError) as e:
        return [], str(e)
    return list(dict.fromkeys(labels)), None


def sidecar_main(path: str | None) -> str | None:
    """For a labels sidecar's path, the path of the item it labels; else None."""
    from ingest.sources.labels import SIDECAR_SUFFIXES

    if not path:
        return None
    return next((path[:-len(x)] for x in SIDECAR_SUFFIXES if path.lower().endswith(x)), None)


# -- ACL helpers shared by the adapters ------------------------------------------------------
def tokens_acl(source: str, users: Iterable[str] = (), groups: Iterable[str] = (),
               everyone: bool = False) -> ACL:
    allow = {user_token(u, source) for u in users if u} | {group_token(g, source) for g in groups if g}
    if everyone:
        allow.add(EVERYONE)
    return ACL(frozenset(allow))


def configured_acl(spec, source: str) -> ACL:
    """A configured ACL: a list of tokens, where ``user:x``/``group:x`` are qualified with the source."""
    if spec is None:
        return ACL.unknown("no ACL from the source and none configured")
    allow = set()
    for t in spec:
        kind, _, rest = t.partition(":")
        if t == EVERYONE:
            allow.add(t)
        elif kind in ("user", "group") and rest and ":" not in rest:
            allow.add(f"{kind}:{source}:{rest}")
        elif kind in ("user", "group") and rest:
            allow.add(t)
        else:
            raise ValueError(f"source {source}: ACL token {t!r} must be everyone, user:<id> or group:<id>")
    return ACL(frozenset(allow))


# -- a small HTTP client (urllib, so no extra dependency) ---------------------------------------
class HTTPError(ConnectorError):
    def __init__(self, status: int, message: str, body: bytes = b""):
        super().__init__(message)
        self.status = status
        self.body = body


class Http:
    """JSON/bytes over HTTP with a bearer token or basic auth; the credential is never logged."""

    def __init__(self, base: str, *, token: str | None = None, basic: tuple[str, str] | None = None,
                 timeout: float = 30.0, what: str = "source"):
        u = urllib.parse.urlsplit(base)
        if "@" in u.netloc:  # user:password@ in the URL: a credential, never part of the URL we print or send
            userinfo, _, hostport = u.netloc.rpartition("@")
            user, _, password = userinfo.partition(":")
            base = urllib.parse.urlunsplit(u._replace(netloc=hostport))
            if not token and not basic:
                basic = (urllib.parse.unquote(user), urllib.parse.unquote(password))
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.what = what
        self.headers: dict[str, str] = {}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        elif basic:
            self.headers["Authorization"] = "Basic " + base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()

    def url(self, path_or_url: str, params: dict | None = None) -> str:
        u = path_or_url if "://" in path_or_url else self.base + "/" + path_or_url.lstrip("/")
        if params:
            u += ("&" if "?" in u else "?") + urllib.parse.urlencode(params)
        return u

    def open(self, method: str, path_or_url: str, *, params: dict | None = None, body: bytes | None = None,
             headers: dict | None = None, stream: bool = False):
        url = self.url(path_or_url, params)
        req = urllib.request.Request(url, data=body, method=method, headers={**self.headers, **(headers or {})})
        try:
            resp = _opener().open(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            data = e.read()
            raise HTTPError(e.code, f"{self.what}: {method} {_redact(url)} -> HTTP {e.code}", data) from None
        except (urllib.error.URLError, OSError) as e:
            raise ConnectorError(f"{self.what}: {method} {_redact(url)} failed: {getattr(e, 'reason', e)}") from None
        if stream:
            return resp
        with resp:
            return resp.status, dict(resp.headers), resp.read()

    def json(self, method: str, path_or_url: str, *, params: dict | None = None, body=None,
             headers: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        hdrs = {"Accept": "application/json", **({"Content-Type": "application/json"} if data else {}),
                **(headers or {})}
        _, _, raw = self.open(method, path_or_url, params=params, body=data, headers=hdrs)
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            raise ConnectorError(f"{self.what}: {method} {_redact(self.url(path_or_url))} returned "
                                 f"something that is not JSON") from None

    def json_or_none(self, path_or_url: str, *, params: dict | None = None) -> dict | None:
        """``GET`` as :meth:`json`; ``None`` when the item is not there (HTTP 404)."""
        try:
            return self.json("GET", path_or_url, params=params)
        except HTTPError as e:
            if e.status == 404:
                return None
            raise


def _redact(url: str) -> str:
    """Drop the query (cursors, tokens), the fragment and any ``user:password@`` from a URL before it
    goes into a message."""
    base = url.split("?", 1)[0].split("#", 1)[0]
    scheme, sep, rest = base.partition("://")
    if not sep:
        return base
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.rpartition('@')[2]}{slash}{path}"


_CREDENTIAL_HEADERS = ("Authorization", "Cookie", "Proxy-authorization")


def _origin(url: str) -> tuple[str, str, int | None]:
    u = urllib.parse.urlsplit(url)
    try:
        port = u.port or {"http": 80, "https": 443}.get(u.scheme)
    except ValueError:
        port = None
    return u.scheme.lower(), (u.hostname or "").lower(), port


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow a redirect to another origin (pre-signed download URLs: Graph, Box) without the
    credentials; refuse a redirect from https to plain http."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is None:
            return None
        old_origin, new_origin = _origin(req.full_url), _origin(new.full_url)
        if old_origin[0] == "https" and new_origin[0] != "https":
            raise urllib.error.HTTPError(new.full_url, code, f"refusing a redirect from https to "
                                         f"{_redact(new.full_url)}", headers, fp)
        if new_origin != old_origin:
            for h in _CREDENTIAL_HEADERS:
                new.headers.pop(h, None)
                new.unredirected_hdrs.pop(h, None)
            log.debug("redirect to another origin %s: credentials dropped", _redact(new.full_url))
        return new


_OPENER: list = []


def _opener():
    if not _OPENER:
        _OPENER.append(urllib.request.build_opener(_RedirectHandler))
    return _OPENER[0]


def iso_ns(stamp: str | None) -> int | None:
    """An ISO 8601 time (``2026-11-01T10:00:00Z``) as nanoseconds since the epoch."""
    from datetime import datetime

    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1e9) if stamp else None


def required(cfg: dict, key: str, source: str, kind: str) -> str:
    """``cfg[key]``, or a ``ValueError`` saying that a source of this kind needs it."""
    if not cfg.get(key):
        raise ValueError(f"source {source}: {kind} needs {key}")
    return cfg[key]


def listed_ids(source: str, list_ids: Callable[[], Iterable[str]]) -> set[str]:
    """Every id ``list_ids()`` lists, or a :class:`ListingError` (so nothing is pruned) if it fails."""
    try:
        return set(list_ids())
    except Exception as e:
        raise ListingError(f"source {source}: listing failed, nothing pruned: {e}") from None


def credential(cfg: dict, key: str, source: str) -> str | None:
    from ingest.config import secret

    v = cfg.get(key)
    return secret(v) if isinstance(v, str) else None


# -- the registry of connector types ---------------------------------------------------------------
TYPES = {
    "webdav": "ingest.sources.webdav:WebDAVConnector",
    "s3": "ingest.sources.s3:S3Connector",
    "graph": "ingest.sources.graph:GraphConnector",
    "gdrive": "ingest.sources.gdrive:DriveConnector",
    "box": "ingest.sources.box:BoxConnector",
    "dropbox": "ingest.sources.dropbox:DropboxConnector",
    "folder": "ingest.sources.folder_connector:FolderConnector",
}


def make_connector(name: str, cfg: dict) -> Connector:
    """A connector from its config table ``[sources.<name>]`` (``type = "webdav"`` ...)."""
    import importlib

    from ingest.config import section

    table = section(cfg, f"sources.{name}") if "type" not in cfg else cfg
    if not table:
        raise LookupError(f"no source {name!r}: add a [sources.{name}] table to the config")
    kind = table.get("type")
    if kind not in TYPES:
        raise ValueError(f"source {name}: type must be one of {', '.join(sorted(TYPES))}, not {kind!r}")
    mod, _, cls = TYPES[kind].partition(":")
    return getattr(importlib.import_module(mod), cls)(name, table)
