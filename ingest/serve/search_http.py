"""Read-only HTTP search, mounted by ``ingest serve`` at ``/search``.

    GET /search?q=quarterly+revenue&k=10        Authorization: Bearer <token>

The principal comes **only** from the bearer token, through ``[serve.tokens]`` in the
configuration (token -> principal; a token may be given as ``env:NAME`` or
``file:PATH``). A request naming a principal in the query string is refused (400), a
request without a known token gets 401, and anything but GET/HEAD gets 405::

    [serve.tokens]
    "env:INGEST_TOKEN_ALICE" = "alice"                              # an OS user name or uid
    "file:/etc/ingest/bot.token" = { user = "1001", groups = ["100"] }  # explicit tokens
    "env:INGEST_TOKEN_KIOSK" = "everyone"                           # public documents only

Query parameters: ``q`` (required), ``k`` (1-100, default 10), ``mode``
(hybrid|bm25|vector), ``per_doc`` (1: one hit per document), ``context`` (0-10
neighbouring chunks), and the filters of ``ingest.stores.filters`` by name (``source``,
``path_prefix``, ``uri_prefix``, ``mime``, ``labels``, ``labels_any``, ``exclude_labels``,
``modified_after``, ``modified_before``, ``doc_ids``; repeat a parameter for several
values). The answer is ``{"hits": [...]}``: each hit as ``Index.search`` returns it, less
its ACL.

    GET /facets?type=ORG&k=20&path_prefix=/srv/legal   Authorization: Bearer <token>

answers ``{"facets": [{"name": "ORG:Globex", "key": "ORG:globex", "count": 12, "chunks": 9,
"docs": 4}, ...]}`` (``Index.facets``: counted over the chunks the token's principal may read),
with the same authentication and filters. Queries are audited by the index under the token's principal; they are not
logged above DEBUG.
"""
from __future__ import annotations

import logging
from dataclasses import asdict
from urllib.parse import parse_qs

from ingest.serve.auth import bearer_token, load_tokens, match
from ingest.serve.app import json_response
from ingest.stores.filters import KEYS as FILTER_KEYS
from ingest.search.index import open_index

log = logging.getLogger("ingest.serve.search_http")

MAX_K = 100
PRINCIPAL_PARAMS = {"principal", "as", "user", "as_user", "on_behalf_of", "for", "uid", "groups", "tokens"}
_LIST_FILTERS = set(FILTER_KEYS) - {"modified_after", "modified_before", "title_contains", "created_after",
                                     "created_before"}


class SearchApp:
    def __init__(self, index, tokens: list[tuple[bytes, object, str]]):
        self.index = index
        self.tokens = tokens
        if not tokens:
            log.warning("search endpoint: no [serve.tokens] configured; every request will be refused")

    def _who(self, environ):
        return match(self.tokens, bearer_token(environ))

    def __call__(self, environ, start_response):
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return json_response(start_response, "405 Method Not Allowed",
                                 {"error": "the search endpoint is read-only: use GET"}, [("Allow", "GET, HEAD")])
        if environ.get("PATH_INFO", "/") not in ("", "/"):
            return json_response(start_response, "404 Not Found", {"error": "no such search resource"})
        who = self._who(environ)
        if who is None:
            return json_response(start_response, "401 Unauthorized",
                                 {"error": "a valid bearer token is required (Authorization: Bearer <token>)"},
                                 [("WWW-Authenticate", 'Bearer realm="ingest"')])
        principal, label = who
        params = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        named = sorted(PRINCIPAL_PARAMS & set(params))
        if named:
            return json_response(start_response, "400 Bad Request",
                                 {"error": f"parameter {named[0]!r} not allowed: the principal comes from the "
                                           f"bearer token only"})
        try:
            kw = self._arguments(params)
        except ValueError as e:
            return json_response(start_response, "400 Bad Request", {"error": str(e)})
        try:
            body = self._answer(principal, kw)
        except ValueError as e:
            return json_response(start_response, "400 Bad Request", {"error": str(e)})
        except LookupError as e:  # a principal in the config the OS does not know
            log.error("search endpoint: principal %s cannot be resolved: %s", label, e)
            return json_response(start_response, "500 Internal Server Error",
                                 {"error": "the token's principal cannot be resolved; see the server log"})
        log.debug("%s by %s", type(self).__name__, label)
        return json_response(start_response, "200 OK", body)

    def _answer(self, principal, kw: dict) -> dict:
        out = []
        for h in self.index.search(principal=principal, **kw):
            d = asdict(h)
            d.pop("acl")
            out.append(d)
        return {"hits": out}

    @staticmethod
    def _arguments(params: dict[str, list[str]]) -> dict:
        known = {"q", "k", "mode", "per_doc", "context"} | set(FILTER_KEYS)
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")

        def one(name, default=None):
            v = params.get(name)
            if v is None:
                return default
            if len(v) > 1:
                raise ValueError(f"parameter {name!r} given {len(v)} times; it takes one value")
            return v[0]

        q = one("q", "")
        if not q.strip():
            raise ValueError("parameter 'q' (the query) is required")

        def integer(name, default, lo, hi):
            v = one(name)
            if v is None:
                return default
            if not v.isdigit() or not lo <= int(v) <= hi:
                raise ValueError(f"parameter {name!r} must be an integer from {lo} to {hi}, got {v!r}")
            return int(v)

        per_doc = one("per_doc", "0")
        if per_doc not in ("0", "1", "true", "false"):
            raise ValueError(f"parameter 'per_doc' must be 0 or 1, got {per_doc!r}")
        filters: dict = {}
        for key in FILTER_KEYS:
            if key in params:
                filters[key] = params[key] if key in _LIST_FILTERS else one(key)
        return {"query": q, "k": integer("k", 10, 1, MAX_K), "mode": one("mode", "hybrid"),
                "group_by_doc": per_doc in ("1", "true"), "context": integer("context", 0, 0, 10),
                "filters": filters or None}


def make_app(store_url: str | None, cfg: dict):
    """``ingest serve`` factory (see ingest.serve.app.MOUNTS)."""
    return SearchApp(open_index(store_url, cfg), load_tokens(cfg))


class FacetsApp(SearchApp):
    """``GET /facets?type=ORG&k=20&<filters>``: ``Index.facets`` for the token's principal (the
    same authentication, refusals and filters as ``/search``); ``{"facets": [...]}``."""

    def _answer(self, principal, kw: dict) -> dict:
        return {"facets": self.index.facets(principal=principal, **kw)}

    @staticmethod
    def _arguments(params: dict[str, list[str]]) -> dict:
        rest = {k: v for k, v in params.items() if k not in ("type", "k")}
        kw = SearchApp._arguments({**rest, "q": ["-"]})
        for name in ("type", "k"):
            if len(params.get(name, [])) > 1:
                raise ValueError(f"parameter {name!r} given {len(params[name])} times; it takes one value")
        etype = params.get("type", [""])[0]
        if not etype.strip():
            raise ValueError("parameter 'type' (an entity type such as ORG or PERSON) is required")
        k = params.get("k", ["20"])[0]
        if not k.isdigit() or not 1 <= int(k) <= 1000:
            raise ValueError(f"parameter 'k' must be an integer from 1 to 1000, got {k!r}")
        return {"entity_type": etype, "k": int(k), "filters": kw["filters"]}


def make_facets_app(store_url: str | None, cfg: dict):
    """``ingest serve`` factory for ``/facets``."""
    return FacetsApp(open_index(store_url, cfg), load_tokens(cfg))
