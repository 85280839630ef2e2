"""Configuration: one TOML file, found at ``--config PATH``, ``$INGEST_CONFIG`` or ``~/.ingest/config.toml``.

Each feature reads its own table and nothing else::

    [serve]                      # ingest serve: HTTP endpoints
    host = "127.0.0.1"
    port = 8765
    [serve.tokens]               # bearer token -> principal; secrets may also be "env:NAME" or "file:PATH"
    "env:INGEST_TOKEN_ALICE" = "alice"

    [webhooks.<name>]            # one table per webhook receiver (see ingest.sources.webhooks)
    [sources.<name>]             # one table per DMS source (see ingest.sources)
    [sinks.<name>]               # secondary stores fed from the outbox
    [labels]                     # classification policies

A missing file is an empty configuration; a malformed one is an error that names the file.
Secrets are never logged: use :func:`secret` to read a value that may point at the environment or a file.
"""
from __future__ import annotations

import os
import tomllib
from pathlib import Path

DEFAULT_CONFIG = "~/.ingest/config.toml"


class ConfigError(ValueError):
    pass


def config_path(path: str | os.PathLike | None = None) -> Path:
    return Path(path or os.environ.get("INGEST_CONFIG") or DEFAULT_CONFIG).expanduser()


def load(path: str | os.PathLike | None = None) -> dict:
    """The whole configuration as a dict; ``{}`` when no file exists at the default place."""
    p = config_path(path)
    explicit = path is not None or "INGEST_CONFIG" in os.environ
    if not p.exists():
        if explicit:
            raise ConfigError(f"config {p}: no such file")
        return {}
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {p}: {e}") from None


def section(cfg: dict, dotted: str) -> dict:
    """``section(cfg, "serve.tokens")`` -> that table, or ``{}``."""
    cur = cfg
    for part in dotted.split("."):
        cur = cur.get(part, {}) if isinstance(cur, dict) else {}
    if not isinstance(cur, dict):
        raise ConfigError(f"config: [{dotted}] must be a table")
    return cur


def secret(value: str) -> str:
    """Resolve ``env:NAME`` and ``file:PATH`` indirections; anything else is the literal secret."""
    if value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise ConfigError(f"config: environment variable {name} is not set")
        return os.environ[name]
    if value.startswith("file:"):
        p = Path(value[5:]).expanduser()
        try:
            return p.read_text().strip()
        except OSError as e:
            raise ConfigError(f"config: cannot read secret file {p}: {e.strerror}") from None
    return value
