"""``ingest``: the command line, a thin face over ingest.cli.runner and ingest.search.index.

Heavy libraries (torch, unstructured, celery) load inside the commands, so
``ingest --help`` is instant.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from ingest import config

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

STORE_HELP = "store path or URL (default: $INGEST_STORE or ~/.ingest/index.db)"


def _store_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=None, metavar="PATH|URL", help=STORE_HELP)


def _sink_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sink", action="append", default=[], metavar="URL",
                   help="secondary store fed from the outbox (repeatable; also [sinks.<name>] in the config)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ingest", description="Watch folders, parse, chunk, embed and keep a "
                                 "permission-aware search index current.")
    ap.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    ap.add_argument("--log-json", action="store_true", default=None,
                    help="log one JSON object per line (also: INGEST_LOG_JSON=1)")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="watch folders and keep the index current until Ctrl-C")
    p.add_argument("paths", nargs="+", metavar="FOLDER")
    _store_arg(p)
    p.add_argument("--broker", default=None, help="Celery broker URL (default: a SQLite broker beside the store)")
    p.add_argument("--debounce", type=float, default=0.25, help="seconds of quiet before a change is queued")
    p.add_argument("--rescan-every", type=float, default=600.0, help="seconds between reconcile scans")
    p.add_argument("--concurrency", type=int, default=None, help="worker processes (default: one per core)")
    _sink_arg(p)

    p = sub.add_parser("add", help="one-shot ingest of folders or files, with a progress bar")
    p.add_argument("paths", nargs="+", metavar="PATH")
    _store_arg(p)
    p.add_argument("--broker", default=None)
    p.add_argument("--concurrency", type=int, default=None, help="worker processes (default: one per core)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _sink_arg(p)

    p = sub.add_parser("sync", help="feed secondary stores from the store's outbox; show or check their lag")
    _store_arg(p)
    _sink_arg(p)
    p.add_argument("--config", default=None, help="config file with [sinks.<name>] tables")
    p.add_argument("--follow", action="store_true", help="keep feeding until Ctrl-C")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for a sink that is down")
    p.add_argument("--check", action="store_true", help="then compare every sink with the store, document by "
                   "document (exit 1 on a difference)")
    p.add_argument("--rebuild", metavar="NAME", default=None,
                   help="re-send every document to this one sink (e.g. after its collection was dropped), "
                   "with a progress bar")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("search", help="search as a user; returns only what that user may read")
    p.add_argument("query")
    _store_arg(p)
    p.add_argument("--as", dest="principal", default=None, metavar="USER",
                   help="user name or uid (default: the current user); 'everyone' for anonymous")
    p.add_argument("-k", type=int, default=10, help="number of results")
    p.add_argument("--mode", choices=["hybrid", "bm25", "vector"], default="hybrid")
    p.add_argument("--json", action="store_true")
    _search_filter_args(p)

    p = sub.add_parser("facets", help="most mentioned entities of a type (ORG, PERSON, GPE ...) in what a user "
                       "may read")
    p.add_argument("type", metavar="TYPE", help="entity type: PERSON, ORG, GPE, LOC, DATE, MONEY, PRODUCT, LAW, EVENT")
    _store_arg(p)
    p.add_argument("--as", dest="principal", default=None, metavar="USER",
                   help="user name or uid (default: the current user); 'everyone' for anonymous")
    p.add_argument("-k", type=int, default=20, help="number of entities")
    p.add_argument("--json", action="store_true")
    _search_filter_args(p, results=False)

    p = sub.add_parser("access", help="may a user read a document? prints allow/deny and the deciding tokens")
    p.add_argument("doc", metavar="DOC", help="document path, URI or doc id")
    _store_arg(p)
    p.add_argument("--as", dest="principal", default=None, metavar="USER",
                   help="user name or uid (default: the current user); 'everyone' for anonymous")
    p.add_argument("--config", default=None, help="config file with the [directory] table")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("status", help="documents by status, errors with reasons, queue depth, quality alerts; "
                       "with DOC: that document's whole trip")
    p.add_argument("doc", nargs="?", metavar="DOC", help="a document (path, URI or doc id): show its trip")
    _store_arg(p)
    p.add_argument("--broker", default=None)
    p.add_argument("--config", default=None, help="config file with [quality.alerts] (default: $INGEST_CONFIG or "
                   "~/.ingest/config.toml)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("retry", help="re-queue dead-lettered tasks (see `ingest status`)")
    _store_arg(p)
    p.add_argument("--broker", default=None)
    p.add_argument("ids", nargs="*", type=int, metavar="ID", help="dead-letter ids (default: all)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("worker", help="run a Celery worker for the store")
    _store_arg(p)
    p.add_argument("--broker", default=None)
    p.add_argument("--queues", default="interactive,bulk,maintenance")
    p.add_argument("--concurrency", type=int, default=None, help="worker processes (default: one per core)")
    p.add_argument("--loglevel", default="WARNING")
    p.add_argument("--metrics-port", type=int, default=None, help="also serve Prometheus /metrics on this port")
    p.add_argument("--config", default=None, help="config file (for --metrics-port: [serve.tokens], [serve.metrics])")

    p = sub.add_parser("serve", help="HTTP endpoints (webhooks, search, metrics, status page)")
    _store_arg(p)
    p.add_argument("--config", default=None, help="config file (default: $INGEST_CONFIG or ~/.ingest/config.toml)")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)

    p = sub.add_parser("poll", help="queue one sync pass of a source from the config ([sources.NAME]) for the "
                                    "workers, as a webhook does (--inline: run it here)")
    p.add_argument("source", metavar="NAME")
    _store_arg(p)
    p.add_argument("--broker", default=None, help="Celery broker URL (default: $INGEST_BROKER, else the SQLite "
                                                  "broker beside the store)")
    p.add_argument("--config", default=None, help="config file (default: $INGEST_CONFIG or ~/.ingest/config.toml); "
                                                  "queued, the worker reads its own $INGEST_CONFIG")
    p.add_argument("--prune", action="store_true", help="also list all ids and delete what is gone")
    p.add_argument("--acl", action="store_true", help="also re-read every document's permissions (ACL-only)")
    p.add_argument("--inline", action="store_true", help="run the pass in this process and report what it did, "
                                                         "instead of queueing it (no worker needed)")
    p.add_argument("--json", action="store_true")

    from ingest.cli import lineage as lineage_cli

    lineage_cli.add_parsers(sub, _store_arg)  # lineage, audit, reembed
    return ap


def _search_filter_args(p: argparse.ArgumentParser, results: bool = True) -> None:
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
    g.add_argument("--entity", action="append", dest="entities_any", metavar="TYPE:NAME",
                   help="mentions this entity, e.g. ORG:Globex (any of those given)")
    g.add_argument("--author", action="append", help="an author contains this (case-insensitive)")
    g.add_argument("--title-contains", metavar="TEXT", help="the document title contains this (case-insensitive)")
    g.add_argument("--created-after", metavar="ISO-DATE", help="document created at or after (its own metadata)")
    g.add_argument("--created-before", metavar="ISO-DATE", help="document created before")
    if not results:
        return
    g = p.add_argument_group("results")
    g.add_argument("--per-doc", action="store_true", help="one hit per document (its best chunk)")
    g.add_argument("--context", type=int, default=0, metavar="N", help="show N neighbouring chunks around each hit")


def _search_filters(a) -> dict:
    keys = ("source", "path_prefix", "uri_prefix", "mime", "labels", "labels_any", "exclude_labels",
            "modified_after", "modified_before", "doc_ids", "entities_any", "author", "title_contains",
            "created_after", "created_before")
    return {k: getattr(a, k) for k in keys if getattr(a, k) is not None}


def _setup_logging(verbose: int, as_json: bool | None = None) -> None:
    from ingest.obs.logs import setup

    setup(logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG, as_json)


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _sinks(a):
    from ingest.stores.outbox import configured_sinks

    return configured_sinks(config.load(getattr(a, "config", None)), a.sink)


def cmd_run(a) -> int:
    from ingest.cli.runner import Runner

    Runner(a.paths, a.store, a.broker, debounce=a.debounce, rescan_every=a.rescan_every,
           concurrency=a.concurrency, loglevel="INFO" if a.verbose else "WARNING", sinks=_sinks(a)).run()
    return 0


def cmd_add(a) -> int:
    from ingest.cli.runner import add, add_exit_code

    summary = add(a.paths, a.store, a.broker, progress=not a.no_progress, concurrency=a.concurrency,
                  sinks=_sinks(a))
    ends = summary["ends"]
    if a.json:
        print(json.dumps(summary, indent=2))
    else:
        outs = ", ".join(f"{v} {k}" for k, v in sorted(summary["outcomes"].items())) or "nothing changed"
        print(f"{summary['queued']} change(s) processed: {outs}")
        for kind, docs in summary["problems"].items():
            for d in docs[:20]:
                print(f"  {kind}: {d['path']}: {d['reason']}")
            if len(docs) > 20:
                print(f"  ... and {len(docs) - 20} more {kind}")
        store = f" --store {a.store}" if a.store else ""
        print(", ".join(f"{n} {k}" for k, n in ends.items()) + f"; `ingest status{store}` lists them")
        if summary.get("entities_owed"):
            print(f"{summary['entities_owed']} chunk(s) still owe their named entities (no worker computed them); "
                  f"the next `ingest add` or `ingest run` on this store queues them again")
    # the truth: anything that ended dead-lettered or failed (not quarantined with a reason) fails the run
    return add_exit_code(ends)


def cmd_search(a) -> int:
    from dataclasses import asdict

    from ingest.search.index import open_index

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
        if h.labels:
            print("    labels: " + ", ".join(h.labels))
        for t in h.context_after:
            print("    … " + " ".join(t.split())[:160])
    return 0


def cmd_facets(a) -> int:
    from ingest.search.index import open_index

    principal = a.principal if a.principal is not None else _current_user()
    rows = open_index(a.store).facets(a.type, principal=principal, filters=_search_filters(a) or None, k=a.k)
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no entities")
    for r in rows:
        print(f"{r['count']:6d}  {r['name']}  ({r['docs']} document(s), {r['chunks']} chunk(s))")
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


def cmd_access(a) -> int:
    from ingest.search.access import default_directory, explain, render
    from ingest.stores import open_store

    store = open_store(a.store)
    principal = a.principal if a.principal is not None else _current_user()
    r = explain(store, a.doc, principal, default_directory(store, config.load(a.config)))
    print(json.dumps(r, indent=2) if a.json else render(r))
    return 0 if r["decision"] == "allow" else 1


def cmd_sync(a) -> int:
    import time

    from ingest.stores import open_store
    from ingest.stores.outbox import Pump

    sinks = _sinks(a)
    if not sinks:
        raise ValueError("no sinks: give --sink URL or [sinks.<name>] url = ... in the config")
    store = open_store(a.store)
    pump = Pump(store, sinks)
    try:
        if a.rebuild is not None:
            _rebuild(store, pump, sinks, a.rebuild, progress=not a.no_progress)
        applied = pump.drain(timeout=a.timeout)
        while a.follow:
            time.sleep(pump.interval)
            pump.step()
        out = {"applied": applied, "sinks": store.sink_lag()}
        if a.check:
            out["differences"] = {s.name: _check(store, s) for s in sinks}
    finally:
        pump.stop()
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        _print_sinks(out["sinks"])
        for name, diffs in out.get("differences", {}).items():
            print(f"check   {name}: " + ("identical" if not diffs else f"{len(diffs)} difference(s)"))
            for d in diffs:
                print(f"  {d}")
    lagging = any(r["lag_rows"] for r in out["sinks"])
    return 1 if lagging or any(out.get("differences", {}).values()) else 0


def _check(store, sink) -> list[str]:
    """``diff_stores`` for one sink; a sink that cannot be read is one difference naming the error
    (the other sinks are still checked, and the exit status is 1)."""
    from ingest.stores.outbox import diff_stores

    try:
        return diff_stores(store, sink.store)
    except Exception as e:  # down or failing: reported as this sink's result, not raised
        return [f"cannot check: {type(e).__name__}: {str(e).strip()[:400]}"]


def _rebuild(store, pump, sinks, name: str, progress: bool) -> None:
    """Forget the sink's position and copy every document to it (documents it holds that the
    store lacks are removed), then the outbox rows written meanwhile follow."""
    import sys

    sink = next((s for s in sinks if s.name == name), None)
    if sink is None:
        raise ValueError(f"--rebuild {name}: no such sink (configured: {', '.join(s.name for s in sinks)})")
    store.set_sink_cursor(sink.name, sink.url, -1)
    bar = None

    def step(total=None, done=0):
        nonlocal bar
        if total is not None and progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="doc", desc=f"rebuild {name}", file=sys.stderr)
        if bar is not None and done:
            bar.update(done)

    try:
        pump.sync(sink, progress=step)
    finally:
        if bar is not None:
            bar.close()


def _print_sinks(sinks: list[dict]) -> None:
    for r in sinks:
        err = f"  last error: {r['last_error']}" if r["last_error"] else ""
        snap = " (initial snapshot pending)" if r.get("snapshot_pending") else ""
        print(f"sink    {r['name']}: lag {r['lag_rows']} row(s), {r['lag_seconds']:.1f} s{snap}{err}")


def cmd_status(a) -> int:
    from ingest.obs import quality
    from ingest.cli.runner import Queue, broker_for
    from ingest.stores import is_postgres, open_store, store_url

    store = open_store(a.store)
    if a.doc:
        from ingest.obs.trace import doc_trip, render_trip

        trip = doc_trip(store, a.doc)
        print(json.dumps(trip, indent=2) if a.json else render_trip(trip))
        return 0
    st = store.status()
    url = store_url(a.store)
    st["queue"] = Queue(url, broker_for(url, a.broker)).depth() if a.broker or not is_postgres(url) else {}
    st["alerts"] = quality.refresh(store, config.load(a.config))
    st["dead_letters"] = store.dead_letters()
    st["entities_owed"] = store.entities_owed()  # chunks whose named entities come after indexing
    if a.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"store   {st['store']} (schema {st['schema_version']})")
    print(f"docs    {st['documents']}  " + "  ".join(f"{k}={v}" for k, v in sorted(st["by_status"].items())))
    print(f"chunks  {st['chunks']}" + (f"  ({st['entities_owed']} owe their named entities: computed after "
                                       f"indexing, on the maintenance lane)" if st["entities_owed"] else ""))
    print("queue   " + ("  ".join(f"{k}={v}" for k, v in sorted(st["queue"].items())) or "empty"))
    _print_sinks(st.get("sinks", []))
    for source, reasons in sorted(st["by_reason"].items()):
        print(f"source  {source}: " + ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())))
    for e in st["errors"]:
        print(f"  {e['status']:<11} {e['uri']}: {e['error_code']}: {e['error']}")
    for f in st["flagged"]:
        print(f"  flagged     {f['uri']}: {'; '.join(f['reasons']) or ', '.join(f['flags'])}")
    for al in st["alerts"]:
        print(f"alert   {al['message']}")
    hint = " (`ingest retry` re-queues them)" if st["dead_letters"] else ""
    print(f"dead    {len(st['dead_letters'])} task(s){hint}")
    for d in st["dead_letters"]:
        print(f"  #{d['id']:<5} {d['fault']:<9} {d['lane'] or '-'} {_dead_what(d)}: {d['reason']}")
    return 0


def _dead_what(d: dict) -> str:
    """What a dead-lettered task was about: 'upsert a/b.txt', the keys of a group, or 'poll <source>'
    (messages of the earlier form, ``[store, kind, root, path, ...]``, too)."""
    args = d["args"]

    def what(e) -> tuple[str, str]:
        if isinstance(e, dict):
            return str(e.get("kind")), str(e.get("key"))
        return str(e[0]), str(e[2]) if len(e) > 2 else ""

    if d["task"] == "ingest.changes" and len(args) > 1:
        keys = [what(e)[1] for e in args[1]]
        return f"{len(keys)} upserts: " + ", ".join(keys[:3]) + (" ..." if len(keys) > 3 else "")
    if d["task"] in ("ingest.poll", "ingest.dms_poll"):
        return f"poll {args[1] if len(args) > 1 else '?'}"
    if len(args) > 1 and isinstance(args[1], dict):
        return " ".join(what(args[1]))
    return " ".join(str(x) for x in (args[1:2] + args[3:4]))


def cmd_retry(a) -> int:
    from workers.lanes import requeue_dead_letters

    from ingest.cli.runner import broker_for
    from ingest.stores import store_url

    url = store_url(a.store)
    done = requeue_dead_letters(url, broker_for(url, a.broker), a.ids or None)
    if a.json:
        print(json.dumps(done))
    else:
        print(f"re-queued {len(done)} task(s)" + (": " + ", ".join(f"#{i}" for i in done) if done else ""))
    return 0


def cmd_worker(a) -> int:
    from ingest.cli.runner import broker_for, run_worker
    from ingest.stores import store_url

    url = store_url(a.store)
    metrics = None
    if a.metrics_port:
        from ingest.serve.app import serve_in_background

        metrics = serve_in_background(url, config.load(a.config), a.metrics_port)
    try:
        run_worker(url, broker_for(url, a.broker), a.queues, a.concurrency, a.loglevel)
    finally:
        if metrics is not None:
            metrics.stop()
    return 0


def cmd_serve(a) -> int:
    from ingest.serve.app import serve

    serve(a.store, config.load(a.config), a.host, a.port)
    return 0


def cmd_poll(a) -> int:
    """Queue one ``ingest.poll`` of the source through the queue's producer (the path a webhook takes);
    ``--inline``: run the same pass here and print its report."""
    from dataclasses import asdict

    cfg = config.load(a.config)
    if not a.inline:
        from ingest.sources.connector import make_connector
        from ingest.stores import store_url as canonical
        from workers.lanes import poll_enqueuer

        make_connector(a.source, cfg)  # an unknown or misconfigured source fails here, not in a worker
        store = canonical(a.store)
        sent = poll_enqueuer(store, a.broker)(a.source, prune=a.prune, acl=a.acl)
        if a.json:
            print(json.dumps({"source": a.source, "queued": sent, "lane": "interactive"}))
        elif sent:
            print(f"{a.source}: a sync pass is queued on the interactive lane (`ingest worker`, or `ingest run`"
                  " on this store, runs it; `ingest poll --inline` runs it here)")
        else:
            print(f"{a.source}: a sync pass is already waiting on the interactive lane; it covers this one")
        return 0
    from ingest.pipeline.connector_sync import sync_source

    rep = sync_source(a.store, a.source, cfg, prune=a.prune, acl=a.acl)
    if a.json:
        print(json.dumps(asdict(rep), indent=2))
    else:
        outs = ", ".join(f"{v} {k}" for k, v in sorted(rep.outcomes.items())) or "nothing changed"
        print(f"{rep.source}: {rep.events} change(s){' (full sync)' if rep.resync else ''}: {outs};"
              f" {rep.downloads} download(s), {rep.pruned} pruned")
    return 1 if rep.outcomes.get("error") else 0


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    before = os.environ.get("INGEST_CONFIG")
    if getattr(a, "config", None):  # the settings, and the workers this command starts, read the same file
        os.environ["INGEST_CONFIG"] = os.path.abspath(os.path.expanduser(a.config))
    try:
        return _main(a)
    finally:
        if before is None:
            os.environ.pop("INGEST_CONFIG", None)
        else:
            os.environ["INGEST_CONFIG"] = before


def _main(a) -> int:
    try:
        config.settings()  # every INGEST_* variable and settings key checked once, before any work
    except config.ConfigError as e:
        print(f"ingest {a.cmd}: {e}", file=sys.stderr)
        return 2
    _setup_logging(a.verbose, a.log_json)
    fn = {"run": cmd_run, "add": cmd_add, "search": cmd_search, "facets": cmd_facets, "status": cmd_status, "retry": cmd_retry,
          "worker": cmd_worker,
          "serve": cmd_serve, "access": cmd_access, "poll": cmd_poll, "sync": cmd_sync}.get(a.cmd)
    if fn is None:
        from ingest.cli.lineage import COMMANDS

        fn = COMMANDS[a.cmd]
    try:
        return fn(a)
    except KeyboardInterrupt:
        return 130
    except (OSError, LookupError, ValueError, RuntimeError) as e:
        print(f"ingest {a.cmd}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
