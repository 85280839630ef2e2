"""Rescan of an unchanged corpus: cold ingest time vs rescan time, with zero embeddings.

  cold     ``ingest add <corpus> --store <db> --no-progress --json`` on a fresh store
           (subprocess, wall time; its own worker, model load included: what a user waits for)
  rescan   the same command again on the unchanged folder (wall time)
  scan     in-process ``reconcile(store, corpus)`` alone (must return []): first call and
           the median of ``--scan-repeats`` calls
  no-worker (diagnostic) ``ingest add ... --broker <the store's embedded broker>``: the same
           rescan without starting a worker (nothing is queued, so nothing waits), to show
           how much of the CLI rescan is worker start/stop
  cli-floor (diagnostic) ``ingest --help``: interpreter + CLI import floor

Reports rescan/cold and scan/cold as percentages (target <= 5%) and the outcomes logged
after the cold run: rows and SUM(embedded) must be 0.

    python bench/rescan.py [--docs 200] [--paragraphs 4]
"""
from __future__ import annotations

import _common  # noqa: F401  (sets HF_HUB_OFFLINE, DO_NOT_TRACK, TOKENIZERS_PARALLELISM first)

import argparse
import os
import sqlite3
import statistics
import sys
import time
from pathlib import Path

from _common import (parse_json_summary, table, timed_cli, verdict, work_dir,
                     write_results)

TARGET_PCT = 5.0


def outcome_counts(db: Path, after_id: int) -> dict:
    with sqlite3.connect(db, timeout=30) as c:
        r = c.execute("SELECT COUNT(*), COALESCE(SUM(embedded),0), COALESCE(SUM(parsed),0), COALESCE(MAX(id),0)"
                      " FROM outcomes WHERE id>?", (after_id,)).fetchone()
    return {"rows": r[0], "embedded": r[1], "parsed": r[2], "last_id": r[3]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--paragraphs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scan-repeats", type=int, default=5)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args(argv)

    from corpora.generate import generate_bench_corpus
    from workers.app import embedded_broker

    from ingest.sources.reconcile import reconcile
    from ingest.stores.sqlite import SQLiteStore

    with work_dir(keep=a.keep) as work:
        corpus, db = work / "corpus", work / "index.db"
        paths = generate_bench_corpus(corpus, a.docs, seed=a.seed, paragraphs=a.paragraphs)
        os.chmod(corpus, 0o755)
        for p in paths:
            os.chmod(p, 0o644)
        print(f"rescan: {a.docs} documents, paragraphs={a.paragraphs}")

        print("cold ingest add ...", flush=True)
        out, cold_s = timed_cli("add", str(corpus), "--store", str(db), "--no-progress", "--json")
        cold = parse_json_summary(out)
        if cold["outcomes"].get("indexed") != a.docs:
            raise RuntimeError(f"cold ingest did not index every document: {cold}")
        after_cold = outcome_counts(db, 0)
        with sqlite3.connect(db) as c:
            n_chunks = c.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        print(f"  {cold_s:.2f}s, {a.docs} documents, {n_chunks} chunks, {after_cold['embedded']} embeddings",
              flush=True)

        print("rescan: ingest add again on the unchanged folder ...", flush=True)
        out, rescan_s = timed_cli("add", str(corpus), "--store", str(db), "--no-progress", "--json")
        rescan = parse_json_summary(out)
        print(f"  {rescan_s:.2f}s, queued {rescan['queued']}", flush=True)

        print("in-process reconcile ...", flush=True)
        t0 = time.perf_counter()
        store = SQLiteStore(db)
        open_s = time.perf_counter() - t0
        scans = []
        for _ in range(max(1, a.scan_repeats)):
            t0 = time.perf_counter()
            events = reconcile(store, str(corpus))
            scans.append(time.perf_counter() - t0)
            assert events == [], f"reconcile of an unchanged folder returned {len(events)} event(s): {events[:5]}"
        store.close()
        scan_first, scan_med = scans[0], statistics.median(scans)
        print(f"  first {scan_first * 1000:.1f} ms, median {scan_med * 1000:.1f} ms (store open {open_s * 1000:.1f} ms)",
              flush=True)

        print("diagnostics ...", flush=True)
        noworker_s = float("nan")
        if not events and rescan["queued"] == 0:  # with nothing queued, no worker is needed
            out, noworker_s = timed_cli("add", str(corpus), "--store", str(db), "--no-progress", "--json",
                                        "--broker", embedded_broker(db))
        _, help_s = timed_cli("--help")
        after = outcome_counts(db, after_cold["last_id"])

    rescan_pct = 100 * rescan_s / cold_s
    scan_pct = 100 * scan_med / cold_s
    zero = after["rows"] == 0 and after["embedded"] == 0 and after["parsed"] == 0 and rescan["queued"] == 0
    pass_cli = rescan_pct <= TARGET_PCT and zero
    pass_scan = scan_pct <= TARGET_PCT and zero
    print()
    print(table([
        ("cold ingest add (CLI)", f"{cold_s:.2f}s", "100%"),
        ("rescan ingest add (CLI)", f"{rescan_s:.2f}s", f"{rescan_pct:.2f}%"),
        ("in-process reconcile (median)", f"{scan_med * 1000:.1f} ms", f"{scan_pct:.3f}%"),
        ("in-process reconcile (first)", f"{scan_first * 1000:.1f} ms", f"{100 * scan_first / cold_s:.3f}%"),
        ("  diag: rescan CLI without own worker", f"{noworker_s:.2f}s", f"{100 * noworker_s / cold_s:.2f}%"),
        ("  diag: `ingest --help` (CLI floor)", f"{help_s:.2f}s", f"{100 * help_s / cold_s:.2f}%"),
    ], ("", "time", "of cold")))
    print(f"\noutcomes after the cold run: {after['rows']} rows, {after['embedded']} embedded, "
          f"{after['parsed']} parsed; rescan queued {rescan['queued']}")
    print(f"worker start/stop share of the CLI rescan: {rescan_s - noworker_s:.2f}s "
          f"({(rescan_s - noworker_s) / rescan_s:.0%})")
    print(f"\nCLI rescan <= {TARGET_PCT:.0f}% of cold, zero embeddings: {verdict(pass_cli)} ({rescan_pct:.2f}%)")
    print(f"in-process scan <= {TARGET_PCT:.0f}% of cold, zero embeddings: {verdict(pass_scan)} ({scan_pct:.3f}%)")
    res = write_results("rescan", {
        "description": "`ingest add` of an unchanged, already indexed folder vs the cold ingest of it",
        "parameters": {"docs": a.docs, "paragraphs": a.paragraphs, "seed": a.seed, "scan_repeats": a.scan_repeats},
        "target": {"rescan_pct_of_cold_max": TARGET_PCT, "embeddings": 0},
        "pass": pass_cli and pass_scan,
        "pass_cli": pass_cli,
        "pass_in_process_scan": pass_scan,
        "cold": {"wall_s": cold_s, "summary": cold, "chunks": n_chunks, "embedded": after_cold["embedded"]},
        "rescan_cli": {"wall_s": rescan_s, "pct_of_cold": rescan_pct, "summary": rescan},
        "rescan_in_process": {"first_s": scan_first, "median_s": scan_med, "all_s": scans,
                              "store_open_s": open_s, "pct_of_cold": scan_pct, "events": 0},
        "outcomes_after_cold": after,
        "diagnostics": {"rescan_cli_without_own_worker_s": noworker_s, "ingest_help_s": help_s,
                        "worker_start_stop_s": rescan_s - noworker_s},
    })
    print(f"wrote {res}")
    return 0 if (pass_cli and pass_scan) else 1


if __name__ == "__main__":
    sys.exit(main())
