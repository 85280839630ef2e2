"""Who is calling an HTTP endpoint: ``Authorization: Bearer <token>`` looked up in ``[serve.tokens]``.

Shared by every endpoint of ``ingest serve`` that needs a principal (search, the status
page, metrics)::

    [serve.tokens]
    "env:INGEST_TOKEN_ALICE" = "alice"                              # an OS user name or uid
    "file:/etc/ingest/bot.token" = { user = "1001", groups = ["100"] }  # explicit tokens
    "env:INGEST_TOKEN_KIOSK" = "everyone"                           # public documents only

A token is given literally or as ``env:NAME`` / ``file:PATH`` (never logged) and must have
at least 16 characters. A malformed entry is a configuration error that names the entry
(not its secret). Presented tokens are compared in constant time against every token.
"""
from __future__ import annotations

import hmac

from acl.model import Principal

from ingest.config import ConfigError, secret, section

MIN_TOKEN_CHARS = 16


def _principal(value, where: str):
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict):
        unknown = set(value) - {"user", "groups"}
        if unknown or "user" not in value:
            raise ConfigError(f"config [serve.tokens] {where}: a principal table takes user and groups "
                              f"(got {sorted(value)})")
        return Principal(user=str(value["user"]), groups=tuple(str(g) for g in value.get("groups", ())))
    raise ConfigError(f"config [serve.tokens] {where}: the principal must be a user name or a table")


def load_tokens(cfg: dict) -> list[tuple[bytes, object, str]]:
    """``[(token bytes, principal, label)]`` from ``[serve.tokens]``; the label names the
    principal in logs and the audit trail. Secrets are resolved now and never logged."""
    out = []
    for i, (spec, who) in enumerate(section(cfg, "serve.tokens").items(), 1):
        where = f"entry {i}"
        token = secret(spec)
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"config [serve.tokens] {where}: a token must have at least "
                              f"{MIN_TOKEN_CHARS} characters")
        p = _principal(who, where)
        out.append((token.encode(), p, who if isinstance(who, str) else f"user:{who['user']}"))
    return out


def match(tokens: list[tuple[bytes, object, str]], presented: str | None) -> tuple[object, str] | None:
    """(principal, label) of a presented token, or None; no early exit."""
    if not presented:
        return None
    found = None
    for token, principal, label in tokens:
        if hmac.compare_digest(token, presented.encode()):
            found = (principal, label)
    return found


def bearer_token(environ) -> str | None:
    h = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = h.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def principal_for_token(token: str | None, cfg: dict) -> str | None:
    """The label of the principal a token belongs to, or None."""
    m = match(load_tokens(cfg), token)
    return m[1] if m else None


def principal_from_request(environ, cfg: dict) -> str | None:
    """The principal label of a WSGI request's bearer token, or None (no token, unknown token)."""
    return principal_for_token(bearer_token(environ), cfg)
