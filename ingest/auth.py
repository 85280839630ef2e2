"""Who is calling an HTTP endpoint: ``Authorization: Bearer <token>`` looked up in ``[serve.tokens]``
(token -> principal; a token may be given as ``env:NAME`` or ``file:PATH``). Shared by the
endpoints of ``ingest serve`` that need a principal (search, the status page, metrics)."""
from __future__ import annotations

import hmac
import logging

log = logging.getLogger("ingest.auth")


def principal_for_token(token: str | None, cfg: dict) -> str | None:
    """The principal a token belongs to, or None. Constant-time comparison against every token."""
    from .config import ConfigError, secret, section

    if not token:
        return None
    found = None
    for key, principal in section(cfg, "serve.tokens").items():
        try:
            known = secret(key)
        except ConfigError as e:  # one unreadable token must not lock everybody out
            log.warning("serve.tokens: %s", e)
            continue
        if known and hmac.compare_digest(known.encode(), token.encode()) and found is None:
            found = str(principal)
    return found


def bearer_token(environ) -> str | None:
    h = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = h.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def principal_from_request(environ, cfg: dict) -> str | None:
    """The principal of a WSGI request's bearer token, or None (no token, unknown token)."""
    return principal_for_token(bearer_token(environ), cfg)
