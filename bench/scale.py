"""Scale-out throughput: the same corpus through 1 and through 2 `ingest worker`
processes (``--concurrency 1`` each, as on two machines) on a real Redis and one
shared SQLite store.

Per worker count, on a fresh store and an empty Redis: the workers start and are
warmed (two documents per worker indexed, so each has loaded the model); then
``ingest add <corpus> --store <db> --broker <redis> --no-progress --json`` runs as a
subprocess, and its wall time (scan + enqueue + processing + progress polling) gives
documents/s. The steady-state rate from the first to the last ``outcomes.ts`` is
reported beside it. On this machine (2 cores, shared) 2 processes can at best double.

    python bench/scale.py [--docs 200] [--workers 1,2]
"""
from __future__ import annotations

import _common  # noqa: F401  (offline environment first)

import argparse
import sqlite3
import time

from _common import parse_json_summary, table, timed_cli, txt_corpus, write_results
from _queue import Workers, start_redis, warm


def run(n_workers: int, work, corpus, args) -> dict:
    from ingest.stores.sqlite import SQLiteStore
    from workers.lanes import Producer

    d = work / f"w{n_workers}"
    d.mkdir()
    warmdir = d / "warm"
    from corpora.generate import generate_bench_corpus

    names = [p.name for p in generate_bench_corpus(warmdir, 2 * n_workers, seed=99, formats=("txt",), paragraphs=1)]
    store = str(d / "index.db")
    SQLiteStore(store).close()
    redis = start_redis(d / "redis")
    workers = Workers(store, redis.url, n_workers, d)
    try:
        warm(Producer(store, redis.url), warmdir, names, store)
        out, wall = timed_cli("add", str(corpus), "--store", store, "--broker", redis.url, "--no-progress", "--json")
        s = parse_json_summary(out)
    finally:
        workers.stop()
        redis.stop()
    with sqlite3.connect(store) as c:
        t0, t1, n = c.execute("SELECT MIN(ts), MAX(ts), COUNT(*) FROM outcomes WHERE batch=?",
                              (s["batch"],)).fetchone()
    return {"workers": n_workers, "docs": s["queued"], "outcomes": s["outcomes"], "wall_s": round(wall, 2),
            "docs_per_s": round(s["queued"] / wall, 2),
            "steady_docs_per_s": round((n - 1) / (t1 - t0), 2) if n > 1 and t1 > t0 else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    results = []
    with txt_corpus(args.keep, "scale", "corpus", args.docs, args.seed) as (work, corpus):
        for n in (int(x) for x in args.workers.split(",")):
            t = time.monotonic()
            results.append(run(n, work, corpus, args))
            print(f"{n} worker(s): {results[-1]['docs_per_s']} docs/s ({time.monotonic() - t:.0f} s with start-up)",
                  flush=True)
    print(table([(r["workers"], r["docs"], r["wall_s"], r["docs_per_s"], r["steady_docs_per_s"]) for r in results],
                ("workers", "docs", "wall s", "docs/s", "steady docs/s")))
    base = results[0]["docs_per_s"]
    speedup = {r["workers"]: round(r["docs_per_s"] / base, 2) for r in results}
    print("speed-up over the first: " + ", ".join(f"{k}: {v}x" for k, v in speedup.items()))
    out = write_results("scale", {"results": results, "speedup": speedup,
                                  "params": {**vars(args), "doc": "one-paragraph TXT, one chunk",
                                             "worker_concurrency": 1}})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
