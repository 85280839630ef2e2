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

Scalar settings (time limits, retries, the store, the broker, embedding threads ...) are one typed
object, :func:`settings`: each has a TOML key and an ``INGEST_*`` environment variable, the
environment wins, and every value is checked when the object is built, with an error that names
the key and the value. The README's "Settings" table lists them (``python -m ingest.config``
prints it). The object is built when asked for, never at import, so a process that sets an
environment variable and then starts workers, or reads it in a test, sees the new value.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
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


# --- settings -------------------------------------------------------------------------------------

_KINDS = {  # kind -> (parse, what the error says was expected)
    "seconds": (float, "a number of seconds"),
    "int": (int, "a whole number"),
    "bool": (None, "on or off"),
    "str": (str, "a string"),
    "path": (str, "a path"),
}
_TRUE, _FALSE = ("1", "on", "true", "yes"), ("0", "off", "false", "no")


# what `[embed] backend` may say: a backend a model id can name (ingest.embedding.BACKENDS), or `auto`
EMBED_BACKEND_CHOICES = ("torch", "onnx", "onnx-int8", "torch-bf16", "openvino-bf16", "auto")


def _setting(env: str, key: str | None, kind: str, default, meaning: str, *, minimum: float | None = None,
             choices: tuple[str, ...] = ()):
    return field(default=default, metadata={"env": env, "key": key, "kind": kind, "meaning": meaning,
                                            "minimum": minimum, "choices": choices})


def parse_value(where: str, raw, kind: str, *, minimum: float | None = None, choices: tuple[str, ...] = ()):
    """``raw`` (an environment string or a TOML value) as ``kind``, or a :class:`ConfigError` that
    names ``where`` (the variable or key) and the value."""
    parse, expected = _KINDS[kind]
    try:
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            v = str(raw).strip().lower()
            if v not in _TRUE + _FALSE:
                raise ValueError
            return v in _TRUE
        if kind in ("int", "seconds") and (isinstance(raw, bool) or (kind == "int" and isinstance(raw, float))):
            raise ValueError
        if kind in ("str", "path") and not isinstance(raw, str):
            raise ValueError
        v = parse(raw.strip() if isinstance(raw, str) else raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}={raw!r}: expected {expected}"
                          + (f" ({', '.join(choices)})" if choices else "")) from None
    if choices and v not in choices:
        raise ConfigError(f"{where}={raw!r}: expected one of {', '.join(choices)}")
    if minimum is not None and v < minimum:
        raise ConfigError(f"{where}={raw!r}: expected {expected} >= {minimum:g}")
    if kind == "path":
        v = os.path.expanduser(v)
    return v


@dataclass(frozen=True)
class Settings:
    """Every scalar setting, typed. Built by :func:`settings`; see the README's "Settings" table.
    ``key`` None: environment only (set by ``ingest run``/``add`` for their workers, or read by
    ``extractors/``, which imports nothing from ``ingest`` and reads its variables itself)."""

    # where things are
    store: str | None = _setting("INGEST_STORE", "store.url", "str", None,
                                 "store path or PostgreSQL URL when a command gets no `--store`; "
                                 "unset: `~/.ingest/index.db`")
    broker: str | None = _setting("INGEST_BROKER", "queue.broker", "str", None,
                                  "broker URL (e.g. `redis://host:6379/0`); unset: the embedded SQLite broker "
                                  "beside the store")
    # queue
    lanes: bool = _setting("INGEST_LANES", "queue.lanes", "bool", True,
                           "`off` sends every task to the `bulk` lane (for comparisons only)")
    max_depth_interactive: int = _setting("INGEST_MAX_DEPTH_INTERACTIVE", "queue.max_depth.interactive", "int",
                                          1000, "backpressure: most tasks waiting in the interactive lane",
                                          minimum=1)
    max_depth_bulk: int = _setting("INGEST_MAX_DEPTH_BULK", "queue.max_depth.bulk", "int", 20000,
                                   "backpressure: most tasks waiting in the bulk lane", minimum=1)
    max_depth_maintenance: int = _setting("INGEST_MAX_DEPTH_MAINTENANCE", "queue.max_depth.maintenance", "int",
                                          20000, "backpressure: most tasks waiting in the maintenance lane",
                                          minimum=1)
    bulk_group: int | None = _setting("INGEST_BULK_GROUP", "queue.bulk_group", "int", None,
                                      "a fixed number of documents per bulk task; unset: a shrinking schedule "
                                      "(tuning, tests)", minimum=1)
    # workers
    task_time_limit: float = _setting("INGEST_TASK_TIME_LIMIT", "worker.task_time_limit", "seconds", 600,
                                      "hard time limit of a task; the soft limit is 30 s less", minimum=31)
    visibility_timeout: float | None = _setting("INGEST_VISIBILITY_TIMEOUT", "worker.visibility_timeout",
                                                "seconds", None, "Redis: an unacknowledged task is delivered "
                                                "again after this; unset: task time limit + 300 s", minimum=1)
    prefetch: int | None = _setting("INGEST_PREFETCH", "worker.prefetch", "int", None,
                                    "tasks reserved per worker process; unset: 1 with Redis, else 4", minimum=1)
    max_tasks_per_child: int = _setting("INGEST_MAX_TASKS_PER_CHILD", "worker.max_tasks_per_child", "int", 1000,
                                        "a worker process is replaced after this many tasks", minimum=1)
    max_memory_per_child_mb: int = _setting("INGEST_MAX_MEMORY_PER_CHILD_MB", "worker.max_memory_per_child_mb",
                                            "int", 3072, "... or once its resident memory passes this (MiB)",
                                            minimum=1)
    task_max_retries: int = _setting("INGEST_TASK_MAX_RETRIES", "worker.max_retries", "int", 5,
                                     "retries of a transient fault before the dead letter", minimum=0)
    retry_base_s: float = _setting("INGEST_RETRY_BASE_S", "worker.retry_base", "seconds", 1.0,
                                   "backoff: uniform(0, min(cap, base x 2^retry))", minimum=0)
    retry_cap_s: float = _setting("INGEST_RETRY_CAP_S", "worker.retry_cap", "seconds", 60.0,
                                  "backoff cap", minimum=0)
    # embedding
    embed_backend: str | None = _setting("INGEST_EMBED_BACKEND", "embed.backend", "str", None,
                                         "`torch`, `onnx`, `onnx-int8`, `torch-bf16`, `openvino-bf16` or `auto` "
                                         "(`openvino-bf16` where the CPU has bfloat16 in hardware, else "
                                         "`onnx-int8`): the backend of a NEW store; unset: `auto`",
                                         choices=EMBED_BACKEND_CHOICES)
    query_backend: str = _setting("INGEST_QUERY_BACKEND", "embed.query_backend", "str", "onnx",
                                  "`torch` embeds the queries of a PyTorch store with PyTorch too",
                                  choices=("onnx", "torch"))
    embed_piece: int = _setting("INGEST_EMBED_PIECE", "embed.piece", "int", 256,
                                "chunks per bounded embedding (and named-entity) step; each piece is cached", minimum=1)
    embed_threads: int | None = _setting("INGEST_EMBED_THREADS", "embed.threads", "int", None,
                                         "intra-op threads per embedding process; unset: `INGEST_TORCH_THREADS`",
                                         minimum=1)
    torch_threads: int | None = _setting("INGEST_TORCH_THREADS", None, "int", None,
                                         "set by `ingest run`/`add` for their workers: cores / worker processes",
                                         minimum=1)
    device: str = _setting("INGEST_DEVICE", "embed.device", "str", "auto",
                           "`cpu`, `cuda` or `cuda:N`; `auto`: ONNX Runtime uses CUDA when it has it, "
                           "PyTorch the CPU")
    embed_cache: str | None = _setting("INGEST_EMBED_CACHE", "embed.cache", "path", None,
                                       "exported ONNX files; unset: `$XDG_CACHE_HOME/ingest/onnx`")
    # documents
    passwords_file: str | None = _setting("INGEST_PASSWORDS_FILE", "extract.passwords_file", "path", None,
                                          "JSON list of `{\"pattern\": glob, \"password\": ...}` for "
                                          "encrypted documents")
    parse_timeout: float = _setting("INGEST_PARSE_TIMEOUT", None, "seconds", 120,
                                    "wall-clock limit of one parse in the sandbox (read by `extractors/`)",
                                    minimum=1)
    parse_memory_mb: int = _setting("INGEST_PARSE_MEMORY_MB", None, "int", 2048,
                                    "address-space limit of the parse sandbox over the worker's (MiB; read by "
                                    "`extractors/`)", minimum=1)
    sandbox_max_tasks: int = _setting("INGEST_SANDBOX_MAX_TASKS", None, "int", 200,
                                      "parses per sandbox process before a fresh one (read by `extractors/`)",
                                      minimum=1)
    tesseract: str = _setting("INGEST_TESSERACT", None, "str", "tesseract",
                              "the Tesseract binary for OCR (read by `extractors/`)")
    ocr_lang: str = _setting("INGEST_OCR_LANG", None, "str", "eng",
                             "OCR languages, Tesseract syntax (`eng+deu`; read by `extractors/`)")
    soffice: str | None = _setting("INGEST_SOFFICE", None, "str", None,
                                   "LibreOffice binary for legacy `.doc/.xls/.ppt`; unset: `soffice`, "
                                   "`libreoffice` on the PATH (read by `extractors/`)")
    # audit, logs
    audit_anchor: str | None = _setting("INGEST_AUDIT_ANCHOR", "audit.anchor", "path", None,
                                        "file outside the store the audit chain's head is appended to")
    log_json: bool = _setting("INGEST_LOG_JSON", "log.json", "bool", False,
                              "one JSON object per log line (also `--log-json`)")

    @property
    def embed_threads_or_torch(self) -> int | None:
        return self.embed_threads or self.torch_threads

    @property
    def soft_time_limit(self) -> float:
        return self.task_time_limit - 30

    @property
    def visibility_timeout_s(self) -> int:
        return int(self.visibility_timeout if self.visibility_timeout is not None else self.task_time_limit + 300)

    @classmethod
    def build(cls, cfg: dict, env=None) -> "Settings":
        """From a loaded configuration and the environment (default ``os.environ``), which wins."""
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            m = f.metadata
            raw, where = env.get(m["env"]), m["env"]
            if raw is None or raw == "":
                raw, where = None, None
                if m["key"]:
                    *tables, leaf = m["key"].split(".")
                    table = section(cfg, ".".join(tables))
                    if leaf in table:
                        raw, where = table[leaf], f"config [{'.'.join(tables)}] {leaf}"
            if where is not None:
                values[f.name] = parse_value(where, raw, m["kind"], minimum=m["minimum"], choices=m["choices"])
        return cls(**values)


_cache: dict = {}


def settings(cfg: dict | None = None) -> Settings:
    """The settings: ``cfg`` (a loaded configuration; default: the file at ``$INGEST_CONFIG`` or
    ``~/.ingest/config.toml``, none there: {}) overridden by ``INGEST_*`` environment variables.
    Raises :class:`ConfigError` naming the first bad key or variable. Cheap to call again: the
    result is kept until the environment or the file changes."""
    if cfg is not None:
        return Settings.build(cfg)
    p = config_path()
    try:
        mtime = p.stat().st_mtime_ns
    except OSError:
        mtime = None
    key = (str(p), mtime, tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("INGEST_"))))
    s = _cache.get(key)
    if s is None:
        s = Settings.build(load(p) if mtime is not None else {})
        _cache.clear()
        _cache[key] = s
    return s


def settings_table() -> str:
    """The README's "Settings" table (markdown), from :class:`Settings` itself."""
    rows = ["| TOML key | Environment | Type | Default | Meaning |", "|---|---|---|---|---|",
            "| - | `INGEST_CONFIG` | path | `~/.ingest/config.toml` | the configuration file (`--config` wins) |"]
    for f in fields(Settings):
        m = f.metadata
        key = f"`[{m['key'].rsplit('.', 1)[0]}] {m['key'].rsplit('.', 1)[1]}`" if m["key"] else "-"
        kind = "one of " + ", ".join(m["choices"]) if m["choices"] else m["kind"]
        if m["minimum"] is not None:
            kind += f" >= {m['minimum']:g}"
        d = f.default
        default = "-" if d is None else f"`{str(d).lower() if isinstance(d, bool) else f'{d:g}' if isinstance(d, float) else d}`"
        rows.append(f"| {key} | `{m['env']}` | {kind} | {default} | {m['meaning']} |")
    rows.append("| - | `INGEST_QUALITY_<FIELD>` | number | see `QualityPolicy` | a quality threshold "
                "(`INGEST_QUALITY_MIN_CHARS`, `..._FLAG_BAD_RATIO`, ...; `ingest/pipeline/quality.py`) |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(settings_table(), end="")
