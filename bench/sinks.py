"""Vector-database sinks: fan-out throughput, and sink lag during a backfill, next to the primary.

  data      ``--docs`` (2,000) documents of ``--per-doc`` (10) chunks = 20,000 chunks, built
            straight into a SQLite primary through ``store.apply`` (no model: generated text,
            random unit vectors of ``--dim`` 384, the size of all-MiniLM-L6-v2; ACL: 1-3 of 40
            groups, 10 % ``everyone``, 2 % with a deny entry).
  fan-out   each sink receives the whole 20,000-chunk store the way a new sink does (the pump's
            initial snapshot, ``Pump.sync``), timed: chunks/s. Then ``diff`` (what
            ``ingest sync --check`` runs) must find the sink equal to the primary, not timed.
  backfill  a fresh primary; a writer applies the same 2,000 documents as fast as the store takes
            them while a pump thread (``interval`` 0.05 s) feeds one sink. Per document: the lag
            from its commit to the sink's cursor passing its outbox row (cursor sampled every
            10 ms): p50/p95/max per sink, with the primary's own apply rate measured alone (no
            pump) and while the pump ran, side by side in the same run.
  sinks     ``qdrant+local`` (embedded files), ``chroma`` (``chroma run`` started here on a
            loopback port), ``milvus+lite`` (embedded); ``sqlite``: a SQLite file sink, the
            primary's own kind, as the reference.

    python bench/sinks.py [--docs 2000] [--per-doc 10] [--sinks sqlite,qdrant,chroma,milvus] [--name sinks]

Qdrant's local mode is qdrant-client's pure-Python engine in this process (no payload index,
the vector search a NumPy scan): the sink changes it by point id and syncs its file to disk once per batch (see
``ingest/stores/sinks/qdrant.py``), so it takes the full 20,000 chunks here, but it competes with
the writer for the interpreter during the backfill. A Qdrant server is the production path.
"""
from __future__ import annotations

import _common  # noqa: F401  (sets HF_HUB_OFFLINE, DO_NOT_TRACK first)

import argparse
import os
import shutil
import socket
import subprocess
import threading
import time

from _common import summary, table, work_dir, write_results

KINDS = ("sqlite", "qdrant", "chroma", "milvus")


def documents(n_docs: int, per_doc: int, dim: int, seed: int = 7):
    """(DocRecord, [ChunkRecord]) for the bench, deterministic."""
    import random

    import numpy as np

    from acl.model import ACL
    from ingest.pipeline.chunking import chunk_id, text_hash
    from ingest.stores.base import ChunkRecord, DocRecord

    rnd, nrs = random.Random(seed), np.random.default_rng(seed)
    words = [f"w{i}" for i in range(500)]
    for d in range(n_docs):
        allow = {f"group:posix:g{g}" for g in rnd.sample(range(40), rnd.randint(1, 3))}
        if rnd.random() < 0.10:
            allow.add("everyone")
        deny = {f"user:posix:u{rnd.randrange(100)}"} if rnd.random() < 0.02 else set()
        doc = DocRecord(doc_id=f"doc{d:06d}", source="bench", external_id=f"doc{d}.txt", uri=f"file:///b/doc{d}.txt",
                        mime="text/plain", size=1000, mtime_ns=d, content_version=str(d),
                        acl=ACL(frozenset(allow), frozenset(deny)))
        vecs = nrs.standard_normal((per_doc, dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        chunks = []
        for i in range(per_doc):
            text = " ".join(rnd.choices(words, k=60))
            th = text_hash(text)
            chunks.append(ChunkRecord(chunk_id(doc.doc_id, i, th), i, text, th, 60, None, "", vecs[i].tobytes(),
                                      "bench", "bench-model"))
        yield doc, chunks


class Chroma:
    """`chroma run` on a free loopback port, its data in ``folder``."""

    def __init__(self, folder):
        exe = shutil.which("chroma")
        if exe is None:
            raise SystemExit("the `chroma` command (pip package chromadb) is not installed")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([exe, "run", "--path", str(folder), "--host", "127.0.0.1", "--port",
                                      str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t0 = time.monotonic()
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() - t0 > 60:
                    raise RuntimeError("chroma run did not start")
                time.sleep(0.1)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def sink_url(kind: str, folder, chroma: Chroma | None, tag: str) -> str:
    if kind == "sqlite":
        return str(folder / f"sink-{tag}.db")
    if kind == "qdrant":
        return f"qdrant+local://{folder}/qdrant-{tag}?collection=bench"
    if kind == "milvus":
        return f"milvus+lite://{folder}/milvus-{tag}.db?collection=bench"
    return f"chroma://127.0.0.1:{chroma.port}?collection=bench_{tag}"


def fan_out(primary, kind: str, url: str, n_chunks: int) -> dict:
    from ingest.stores.outbox import Pump, Sink, diff_stores

    sink = Sink(kind, url)
    pump = Pump(primary, [sink])
    try:
        sink.store  # the client library imported and connected before the clock starts
        t0 = time.monotonic()
        pump.sync(sink)
        secs = time.monotonic() - t0
        diffs = diff_stores(primary, sink.store)
    finally:
        pump.stop()
    if diffs:
        raise AssertionError(f"{kind}: sink differs from the primary after the fan-out: {diffs[:3]}")
    return {"seconds": round(secs, 2), "chunks_per_s": round(n_chunks / secs, 1), "equal": True}


def backfill(folder, kind: str | None, url: str | None, docs) -> dict:
    """Apply ``docs`` to a fresh primary, a pump feeding ``url`` meanwhile (none: the primary alone)."""
    from ingest.stores.outbox import Pump, Sink
    from ingest.stores.sqlite import SQLiteStore

    if kind:  # the client library imported (seconds on a busy machine) before the clock starts
        Sink(kind, url).store.close()
    primary = SQLiteStore(folder / f"backfill-{kind or 'alone'}.db", model_id="bench-model")
    commits: list[tuple[int, float]] = []
    lags: list[float] = []
    pump = Pump(primary, [Sink(kind, url)], interval=0.05).start() if kind else None
    writing = threading.Event()
    writing.set()

    def sample():
        i = 0
        while i < len(commits) or writing.is_set():
            cur = primary.sink_cursor(kind)
            now = time.monotonic()
            while cur is not None and i < len(commits) and commits[i][0] <= cur:
                lags.append(now - commits[i][1])
                i += 1
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True) if kind else None
    try:
        if sampler:
            sampler.start()
        t0 = time.monotonic()
        n_chunks = 0
        for doc, chunks in docs:
            primary.apply(doc, chunks)
            commits.append((primary.outbox_head(), time.monotonic()))
            n_chunks += len(chunks)
        write_s = time.monotonic() - t0
        writing.clear()
        if sampler:
            sampler.join(1800)
        drained_s = time.monotonic() - t0
    finally:
        if pump:
            pump.stop()
        primary.close()
    out = {"primary_docs_per_s": round(len(commits) / write_s, 1),
           "primary_chunks_per_s": round(n_chunks / write_s, 1), "write_seconds": round(write_s, 2)}
    if kind:
        s = summary(lags)
        out.update(lag_p50_s=round(s["p50"], 3), lag_p95_s=round(s["p95"], 3), lag_max_s=round(s["max"], 3),
                   caught_up_after_s=round(drained_s, 2), sink_chunks_per_s=round(n_chunks / drained_s, 1))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--per-doc", type=int, default=10)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--sinks", default=",".join(KINDS))
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--name", default="sinks", help="results file bench/results/NAME.json (default sinks)")
    a = ap.parse_args(argv)
    kinds = [k for k in a.sinks.split(",") if k]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise SystemExit(f"--sinks: unknown {bad} (known: {', '.join(KINDS)})")
    from ingest.stores.sqlite import SQLiteStore

    n_chunks = a.docs * a.per_doc
    results: dict = {"params": {"docs": a.docs, "per_doc": a.per_doc, "chunks": n_chunks, "dim": a.dim,
                                "sinks": kinds}, "fan_out": {}, "backfill": {},
                          "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}
    with work_dir(keep=a.keep, prefix="ingest-bench-sinks-") as folder:
        chroma = Chroma(folder / "chroma") if "chroma" in kinds else None
        try:
            primary = SQLiteStore(folder / "primary.db", model_id="bench-model")
            t0 = time.monotonic()
            for doc, chunks in documents(a.docs, a.per_doc, a.dim):
                primary.apply(doc, chunks)
            print(f"  primary: {n_chunks} chunks in {time.monotonic() - t0:.1f} s", flush=True)
            for kind in kinds:
                r = results["fan_out"][kind] = fan_out(primary, kind, sink_url(kind, folder, chroma, "fan"), n_chunks)
                print(f"  fan-out {kind}: {r['chunks_per_s']} chunks/s", flush=True)
            primary.close()
            results["backfill"]["primary alone"] = backfill(folder, None, None,
                                                            documents(a.docs, a.per_doc, a.dim))
            for kind in kinds:
                r = results["backfill"][kind] = backfill(folder, kind, sink_url(kind, folder, chroma, "bf"),
                                                         documents(a.docs, a.per_doc, a.dim))
                print(f"  backfill {kind}: lag p95 {r['lag_p95_s']} s", flush=True)
        finally:
            if chroma:
                chroma.stop()
    print()
    print(f"Fan-out of a {n_chunks}-chunk store (initial snapshot, then checked equal):")
    print(table([(k, v["seconds"], v["chunks_per_s"]) for k, v in results["fan_out"].items()],
                ("sink", "seconds", "chunks/s")))
    print()
    print(f"Backfill of {a.docs} documents ({n_chunks} chunks) with a pump feeding one sink:")
    print(table([(k, v["primary_docs_per_s"], v["primary_chunks_per_s"], v.get("lag_p50_s", "-"),
                   v.get("lag_p95_s", "-"), v.get("lag_max_s", "-"), v.get("caught_up_after_s", "-"))
                  for k, v in results["backfill"].items()],
                ("run", "primary docs/s", "primary chunks/s", "sink lag p50 s", "p95 s", "max s", "caught up s")))
    out = write_results(a.name, results)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
