"""``ingest``: the command line, a thin face over ingest.runner and ingest.search.

Heavy libraries (torch, unstructured, celery) load inside the commands, so
``ingest --help`` is instant.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STORE_HELP = "store path or URL (default: $INGEST_STORE or ~/.ingest/index.db)"


def _store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=None, metavar="PATH|URL", help=STORE_HELP)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ingest", description="Watch folders, parse, chunk, embed and keep a "
                                 "permission-aware search index current.")
    ap.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="watch folders and keep the index current until Ctrl-C")
    p.add_argument("paths", nargs="+", metavar="FOLDER")
    _store_arg(p)
    p.add_argument("--broker", default=None, help="Celery broker URL (default: a SQLite broker beside the store)")
    p.add_argument("--debounce", type=float, default=0.25, help="seconds of quiet before a change is queued")
    p.add_argument("--rescan-every", type=float, default=600.0, help="seconds between reconcile scans")
    p.add_argument("--concurrency", type=int, default=None, help="worker processes (default: one per core)")

    p = sub.add_parser("add", help="one-shot ingest of folders or files, with a progress bar")
    p.add_argument("paths", nargs="+", metavar="PATH")
    _store_arg(p)
    p.add_argument("--broker", default=None)
    p.add_argument("--concurrency", type=int, default=None, help="worker processes (default: one per core)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser("search", help="search as a user; returns only what that user may read")
    p.add_argument("query")
    _store_arg(p)
    p.add_argument("--as", dest="principal", default=None, metavar="USER",
                   help="user name or uid (default: the current user); 'everyone' for anonymous")
    p.add_argument("-k", type=int, default=10, help="number of results")
    p.add_argument("--mode", choices=["hybrid", "bm25", "vector"], default="hybrid")
    p.add_argument("--json", action="store_true")
    _search_filter_args(p)

    p = sub.add_parser("status", help="documents by status, errors with reasons, queue depth")
    _store_arg(p)
    p.add_argument("--broker", default=None)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("worker", help="run a Celery worker for the store")
    _store_arg(p)
    p.add_argument("--broker", default=None)
    p.add_argument("--queues", default="interactive,bulk,maintenance")
    p.add_argument("--concurrency", type=int, default=None, help="worker processes (default: one per core)")
    p.add_argument("--loglevel", default="WARNING")

    p = sub.add_parser("serve", help="HTTP endpoints (webhooks, search, metrics, status page)")
    _store_arg(p)
    p.add_argument("--config", default=None, help="config file (default: $INGEST_CONFIG or ~/.ingest/config.toml)")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    return ap


def _search_filter_args(p: argparse.ArgumentParser) -> None:
    """Filters and result shaping for `ingest search` (see ingest.stores.filters); repeatable
    options take several values (any of them matches)."""
    g = p.add_argument_group("filters (all given must hold; the ACL always applies)")
    g.add_argument("--source", action="append", help="document source, e.g. folder:/srv/share")
    g.add_argument("--path-prefix", action="append", metavar="PATH", help="absolute path prefix")
    g.add_argument("--uri-prefix", action="append", metavar="URI", help="document URI prefix")
    g.add_argument("--mime", action="append", help="MIME type, or a family such as text/*")
    g.add_argument("--label", action="append", dest="labels", metavar="LABEL", help="label a hit must carry (all given)")
    g.add_argument("--any-label", action="append", dest="labels_any", metavar="LABEL", help="at least one of these labels")
    g.add_argument("--exclude-label", action="append", dest="exclude_labels", metavar="LABEL", help="label a hit must not carry")
    g.add_argument("--modified-after", metavar="ISO-DATE", help="document modified at or after")
    g.add_argument("--modified-before", metavar="ISO-DATE", help="document modified before")
    g.add_argument("--doc-id", action="append", dest="doc_ids", metavar="ID", help="document id")
    g = p.add_argument_group("results")
    g.add_argument("--per-doc", action="store_true", help="one hit per document (its best chunk)")
    g.add_argument("--context", type=int, default=0, metavar="N", help="show N neighbouring chunks around each hit")


def _search_filters(a) -> dict:
    keys = ("source", "path_prefix", "uri_prefix", "mime", "labels", "labels_any", "exclude_labels",
            "modified_after", "modified_before", "doc_ids")
    return {k: getattr(a, k) for k in keys if getattr(a, k) is not None}


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def cmd_run(a) -> int:
    from .runner import Runner

    Runner(a.paths, a.store, a.broker, debounce=a.debounce, rescan_every=a.rescan_every,
           concurrency=a.concurrency, loglevel="INFO" if a.verbose else "WARNING").run()
    return 0


def cmd_add(a) -> int:
    from .runner import add

    summary = add(a.paths, a.store, a.broker, progress=not a.no_progress, concurrency=a.concurrency)
    if a.json:
        print(json.dumps(summary, indent=2))
    else:
        outs = ", ".join(f"{v} {k}" for k, v in sorted(summary["outcomes"].items())) or "nothing changed"
        print(f"{summary['queued']} change(s) processed: {outs}")
    return 1 if summary["outcomes"].get("error") and not summary["outcomes"].get("indexed") else 0


def cmd_search(a) -> int:
    from dataclasses import asdict

    from .search import open_index

    principal = a.principal if a.principal is not None else _current_user()
    hits = open_index(a.store).search(a.query, principal=principal, k=a.k, mode=a.mode,
                                      filters=_search_filters(a) or None, group_by_doc=a.per_doc,
                                      context=a.context)
    if a.json:
        print(json.dumps([asdict(h) for h in hits], indent=2))
        return 0
    if not hits:
        print("no results")
    for i, h in enumerate(hits, 1):
        where = f"p.{h.page}" if h.page else ""
        sect = f" § {h.section}" if h.section else ""
        print(f"{i:2d}. {h.score:.4f} {h.uri} {where}{sect}")
        for t in h.context_before:
            print("    … " + " ".join(t.split())[-160:])
        print("    " + _marked(h.text, h.highlights))
        for t in h.context_after:
            print("    … " + " ".join(t.split())[:160])
    return 0


def _marked(text: str, spans, width: int = 200) -> str:
    """The hit text from a little before its first matched term, terms in [brackets]."""
    start = max(0, spans[0][0] - 40) if spans else 0
    out, pos = [], start
    for s, e in spans:
        if s >= pos:
            out += [text[pos:s], "[", text[s:e], "]"]
            pos = e
    out.append(text[pos:])
    return ("…" if start else "") + " ".join("".join(out).split())[:width]


def cmd_status(a) -> int:
    from workers.app import embedded_broker

    from .runner import Queue
    from .stores import open_store, store_path

    st = open_store(a.store).status()
    broker = a.broker or embedded_broker(store_path(a.store))
    st["queue"] = Queue(str(store_path(a.store)), broker).depth()
    if a.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"store   {st['store']} (schema {st['schema_version']})")
    print(f"docs    {st['documents']}  " + "  ".join(f"{k}={v}" for k, v in sorted(st["by_status"].items())))
    print(f"chunks  {st['chunks']}")
    print("queue   " + ("  ".join(f"{k}={v}" for k, v in sorted(st["queue"].items())) or "empty"))
    for source, reasons in sorted(st["by_reason"].items()):
        print(f"source  {source}: " + ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())))
    for e in st["errors"]:
        print(f"  {e['status']:<11} {e['uri']}: {e['error_code']}: {e['error']}")
    for f in st["flagged"]:
        print(f"  flagged     {f['uri']}: {'; '.join(f['reasons']) or ', '.join(f['flags'])}")
    return 0


def cmd_worker(a) -> int:
    from workers.app import embedded_broker

    from .runner import run_worker
    from .stores import store_path

    url = str(store_path(a.store))
    run_worker(url, a.broker or embedded_broker(url), a.queues, a.concurrency, a.loglevel)
    return 0


def cmd_serve(a) -> int:
    from . import config
    from .serve import serve

    serve(a.store, config.load(a.config), a.host, a.port)
    return 0


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    _setup_logging(a.verbose)
    fn = {"run": cmd_run, "add": cmd_add, "search": cmd_search, "status": cmd_status, "worker": cmd_worker,
          "serve": cmd_serve}[a.cmd]
    try:
        return fn(a)
    except KeyboardInterrupt:
        return 130
    except (OSError, LookupError, ValueError, RuntimeError) as e:
        print(f"ingest {a.cmd}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
