"""Efficiency: whole-pipeline chunks/s over raw ``model.encode`` chunks/s, same chunks, one run.

Phases, in this order (machines are noisy: everything is compared inside one run):

  B0  in-process breakdown: ``Pipeline.handle`` over the whole corpus into a scratch
      store with a warm model, timing extract / chunk / embed / store per document
      (method wrappers in this process; no repository file is touched).
  R1  raw encode #1: ``get_embedder().encode(texts)`` on exactly the inputs the pipeline
      gave the model in B0 (each chunk's section path + text, recorded), warm model,
      batch size ``Embedder.batch_size`` (the pipeline's).
  A   pipeline (the figure): the user's path, ``ingest add <corpus> --store <db>
      --broker <the store's embedded broker> --no-progress --json`` as a subprocess,
      served by a Celery worker (``ingest worker``) that was started before and warmed
      with one document of every format (model loaded, every extractor imported).
      Pipeline time = from the start of that ``ingest add`` command to the moment its
      last document is stored, text and vectors searchable (the last outcome's
      timestamp): it counts the CLI start, the reconcile scan, queueing every document
      as a Celery task on the bulk lane, the worker's broker polling, fetch/hash/ACL,
      extraction, chunking, embedding, the store transaction and the progress polling.
      It excludes only the worker's one-time start-up (process start, model load,
      extractor imports), which is paid once per worker, not per document. Named
      entities come after indexing by default (``[nlp] after_indexing``: the
      maintenance lane, which the worker takes when no change waits) and the command
      waits for them too: the entity lag (last document stored -> command done) and
      the ratio over the whole command are reported beside the figure.
  R2  raw encode #2: the same inputs again, after phase A (the best of R1/R2 is the baseline).
  C   (context, --no-cold to skip) a plain cold ``ingest add`` into a fresh store,
      exactly as a user types it (its own worker is started and loads the model):
      wall time, and the steady-state rate from ``outcomes.ts`` (first -> last).

Ratio = phase A chunks/s (indexed) / max(R1, R2) chunks/s; target >= 1.5 (issue 16: the pipeline runs the
default backend for new stores, onnx-int8; R1/R2 are always raw sentence-transformers PyTorch
``encode``, the plain model id; with the torch backend the ratio was 0.71-0.76).

  E   (--entities) named entities on vs off, same run: phase A's path (warm worker, ``ingest
      add``) twice more into fresh stores, the worker configured with ``[nlp] entities = false``
      and then ``true`` (``INGEST_CONFIG``), in the order off, on, off, on (noise evens out);
      cost = 1 - (entities-on chunks/s) / (entities-off chunks/s) of indexing (text searchable),
      target <= 0.15 (issue 18: entities on the maintenance lane after indexing, "with freshness
      of the text unchanged and the entity lag measured"); the entity lag and the cost over the
      whole command (entities in) are reported beside it.
      ``--entities-only`` runs just this phase (and writes ``entities_cost`` into the results).

    python bench/efficiency.py [--docs 60] [--paragraphs 16] [--no-cold] [--entities | --entities-only]
    INGEST_EMBED_BACKEND=torch-bf16 python bench/efficiency.py ...   # another backend: efficiency-<backend>.json
"""
from __future__ import annotations

import _common  # noqa: F401  (sets HF_HUB_OFFLINE, DO_NOT_TRACK, TOKENIZERS_PARALLELISM first)

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from _common import (REPO, child_env, cores, ingest_cmd, parse_json_summary, table, timed_cli, verdict,
                     work_dir, write_results)

TARGET_RATIO = 1.5
TARGET_ENTITY_COST = 0.15
WARM_FORMATS = ("docx", "pdf", "md", "txt", "html")


# --------------------------------------------------------------------------- helpers

def chmod_tree(root: Path) -> None:
    for dp, dns, fns in os.walk(root):
        os.chmod(dp, 0o755)
        for fn in fns:
            os.chmod(os.path.join(dp, fn), 0o644)


def store_texts(db: Path, source: str | None = None) -> list[str]:
    with sqlite3.connect(db, timeout=30) as c:
        if source is None:
            return [r[0] for r in c.execute("SELECT text FROM chunks ORDER BY rowid")]
        return [r[0] for r in c.execute("SELECT c.text FROM chunks c JOIN documents d ON d.doc_id=c.doc_id"
                                        " WHERE d.source=? ORDER BY c.rowid", (source,))]


def _default_model_id() -> str:
    from ingest.pipeline.embed import default_model_id

    return default_model_id()


def raw_encode(texts: list[str], repeats: int = 1) -> dict:
    """Best of ``repeats`` timings of one encode() call over all texts (warm model)."""
    from ingest.pipeline.embed import get_embedder

    e = get_embedder()
    e.encode(texts[: e.batch_size])  # warm-up (allocator, kernels)
    best = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        v = e.encode(texts)
        dt = time.perf_counter() - t0
        assert len(v) == len(texts)
        best = dt if best is None else min(best, dt)
    return {"chunks": len(texts), "seconds": best, "chunks_per_s": len(texts) / best,
            "batch_size": e.batch_size}


def raw_encode_per_doc(groups: list[list[str]]) -> dict:
    """encode() once per document's chunk list: the call pattern the pipeline has."""
    from ingest.pipeline.embed import get_embedder

    e = get_embedder()
    n = sum(len(g) for g in groups)
    t0 = time.perf_counter()
    for g in groups:
        e.encode(g)
    dt = time.perf_counter() - t0
    return {"chunks": n, "seconds": dt, "chunks_per_s": n / dt}


def breakdown(corpus: Path, db: Path) -> tuple[dict, list[list[str]]]:
    """In-process Pipeline over the corpus with per-stage timers."""
    import extractors

    from ingest.pipeline.embed import get_embedder
    from ingest.pipeline.document import Pipeline
    from ingest.sources.base import UPSERT, ChangeEvent
    from ingest.stores.sqlite import SQLiteStore

    store = SQLiteStore(db)
    emb = get_embedder(store.model_id)
    pipe = Pipeline(store, emb, sandbox=False)  # the stage timers wrap extract in-process
    emb.encode(["warm-up"])
    acc: dict[str, float] = defaultdict(float)
    per_fmt: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    cur = {"fmt": None}

    def timed(name, fn):
        def w(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                dt = time.perf_counter() - t0
                acc[name] += dt
                per_fmt[cur["fmt"]][name] += dt
        return w

    from ingest.pipeline import document as pipeline_document

    orig_extract = pipeline_document.extract  # the name the pipeline calls (imported at its module's top)
    pipeline_document.extract = timed("extract", orig_extract)
    chunker = pipe.chunker
    chunker.chunk = timed("chunk", chunker.chunk)
    orig_encode = emb.encode
    inputs: list[list[str]] = []  # exactly what the pipeline gives the model, one list per call

    def recording(texts):
        inputs.append(list(texts))
        return orig_encode(texts)

    emb.encode = timed("embed", recording)  # instance attribute: shadows the method here only
    store.apply = timed("store_apply", store.apply)
    pipe.entities = timed("entities", pipe.entities)  # named entities (spaCy NER), run per document at apply
    # warm every extractor family once (first use imports heavy parsers)
    files = sorted(p for p in corpus.iterdir() if p.is_file())
    seen_fmt = set()
    warm_dir = db.parent / "bd-warm"
    warm_dir.mkdir()
    for p in files:
        if p.suffix not in seen_fmt:
            seen_fmt.add(p.suffix)
            shutil.copy(p, warm_dir / p.name)
    try:
        for p in sorted(warm_dir.iterdir()):
            t0 = time.perf_counter()
            extractors.extract(p)
        acc.clear()
        per_fmt.clear()
        docs = 0
        chunks = 0
        t0, cpu0 = time.perf_counter(), time.process_time()
        for p in files:
            cur["fmt"] = p.suffix.lstrip(".")
            t = time.perf_counter()
            outs = pipe.handle(ChangeEvent(UPSERT, str(corpus), p.name))
            per_fmt[cur["fmt"]]["total"] += time.perf_counter() - t
            per_fmt[cur["fmt"]]["docs"] += 1
            assert outs[-1].action == "indexed", outs
            docs += 1
            chunks += outs[-1].chunks
            per_fmt[cur["fmt"]]["chunks"] += outs[-1].chunks
        total, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        pipeline_document.extract = orig_extract
        del emb.encode
    other = total - sum(acc.values())
    groups = [g for g in inputs[1:] if g]  # [0] is the warm-up call; one call per document after it
    store.close()
    stages = {k: acc.get(k, 0.0) for k in ("extract", "chunk", "embed", "entities", "store_apply")}
    stages["other (stat, hash, ACL, quality, labels, registry, outcome log)"] = other
    return ({"docs": docs, "chunks": chunks, "total_s": total, "chunks_per_s": chunks / total, "cpu_s": cpu,
             "stages_s": stages, "stages_share": {k: v / total for k, v in stages.items()},
             "per_format": {f: dict(v) for f, v in per_fmt.items()}}, groups)


def batch_outcomes(db: Path, batch: str) -> list[dict]:
    with sqlite3.connect(db, timeout=30) as c:
        c.row_factory = sqlite3.Row
        return [dict(r) for r in c.execute(
            "SELECT o.ts, o.action, o.embedded, o.external_id, COALESCE(d.n_chunks, 0) AS n_chunks"
            " FROM outcomes o LEFT JOIN documents d ON d.doc_id=o.doc_id WHERE o.batch=? ORDER BY o.ts", (batch,))]


def steady_state(outs: list[dict]) -> dict | None:
    """Rate over documents 2..N from outcome timestamps (excludes start-up and the first doc)."""
    if len(outs) < 3:
        return None
    span = outs[-1]["ts"] - outs[0]["ts"]
    chunks = sum(o["n_chunks"] for o in outs[1:])
    gaps = [b["ts"] - a["ts"] for a, b in zip(outs, outs[1:])]
    return {"docs": len(outs) - 1, "chunks": chunks, "seconds": span, "chunks_per_s": chunks / span,
            "median_doc_s": statistics.median(gaps)}


def indexed_s(db: Path, summary: dict, t_wall: float) -> float:
    """Seconds from the start of an ``ingest add`` to its last document stored (searchable)."""
    outs = batch_outcomes(db, summary["batch"])
    return outs[-1]["ts"] - t_wall


def run_add(paths: list[Path], db: Path, broker: str | None) -> tuple[dict, float, float]:
    args = ["add", *map(str, paths), "--store", str(db), "--no-progress", "--json"]
    if broker:
        args += ["--broker", broker]
    t_wall = time.time()
    out, dt = timed_cli(*args)
    return parse_json_summary(out), dt, t_wall


class Worker:
    """`ingest worker` for a store, started and stopped by us (warm across `ingest add` calls)."""

    def __init__(self, db: Path, broker: str, concurrency: int | None = None, env: dict | None = None):
        self.log = open(str(db) + ".worker.log", "ab")
        extra = ["--concurrency", str(concurrency)] if concurrency else []
        self.proc = subprocess.Popen(ingest_cmd("worker", "--store", str(db), "--broker", broker, *extra),
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env={**child_env(), **(env or {})}, cwd=str(REPO))

    def cpu_s(self) -> float:
        """CPU seconds (user + system) of the worker's process tree so far: every live process
        under it, plus what its reaped children spent (cutime/cstime of their parents)."""
        tick = os.sysconf("SC_CLK_TCK")
        procs: dict[int, tuple[int, float]] = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # fields[1] = ppid; utime, stime, cutime, cstime are fields[11:15]
            procs[int(d)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / tick)
        tree, grew = {self.proc.pid}, True
        while grew:
            more = {pid for pid, (ppid, _) in procs.items() if ppid in tree and pid not in tree}
            tree |= more
            grew = bool(more)
        return sum(procs[pid][1] for pid in tree if pid in procs)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def entities_compare(corpus: Path, warm: Path, work: Path, concurrency: int | None, rounds: int = 2) -> dict:
    """Phase E: the warm-worker ``ingest add`` path with entities off and on, alternating."""
    from workers.app import embedded_broker

    from ingest.pipeline.document import folder_source

    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for r in range(rounds):
        for mode in ("off", "on"):
            cfg = work / f"nlp-{mode}.toml"
            cfg.write_text(f"[nlp]\nentities = {'true' if mode == 'on' else 'false'}\n")
            db = work / f"entities-{mode}-{r}.db"
            broker = embedded_broker(db)
            worker = Worker(db, broker, concurrency, env={"INGEST_CONFIG": str(cfg)})
            try:
                run_add([warm], db, broker)
                summary, wall, t_wall = run_add([corpus], db, broker)
                index_s = indexed_s(db, summary, t_wall)
            finally:
                worker.stop()
            with sqlite3.connect(db) as c:
                chunks, with_ents = c.execute(
                    "SELECT COUNT(*), SUM(c.entities<>'{}') FROM chunks c JOIN documents d ON d.doc_id=c.doc_id"
                    " WHERE d.source=?", (folder_source(corpus),)).fetchone()
            if summary["outcomes"].get("indexed") != len(list(corpus.iterdir())):
                raise RuntimeError(f"phase E ({mode}) did not index every document: {summary}")
            runs[mode].append({"wall_s": wall, "indexed_s": index_s, "entity_lag_s": wall - index_s, "chunks": chunks,
                               "chunks_with_entities": with_ents or 0, "chunks_per_s": chunks / index_s,
                               "chunks_per_s_whole_command": chunks / wall})
            print(f"E   entities {mode:3} round {r + 1}: {chunks} chunks indexed in {index_s:.2f}s -> "
                  f"{chunks / index_s:.1f} chunks/s; command done after {wall:.2f}s ({chunks / wall:.1f} chunks/s, "
                  f"{with_ents or 0} chunks with entities)", flush=True)

    def pooled(mode: str, key: str) -> float:
        return sum(x["chunks"] for x in runs[mode]) / sum(x[key] for x in runs[mode])

    off, on = pooled("off", "indexed_s"), pooled("on", "indexed_s")
    cost = 1 - on / off
    whole = 1 - pooled("on", "wall_s") / pooled("off", "wall_s")
    lag = statistics.mean(x["entity_lag_s"] - y["entity_lag_s"] for x, y in zip(runs["on"], runs["off"]))
    return {"runs": runs, "chunks_per_s_off": off, "chunks_per_s_on": on, "cost": cost,
            "cost_whole_command": whole, "entity_lag_s": lag,
            "target_cost_max": TARGET_ENTITY_COST, "pass": cost <= TARGET_ENTITY_COST,
            "method": "pooled chunks/s of indexing (command start -> last document stored) on the warm-worker "
                      "`ingest add` path (phase A), entities off vs on, alternating off/on per round, fresh store "
                      "each run; the entity lag is the extra time from the last document stored to the command's "
                      "end with entities on (the command waits for the entities), against off"}


# ------------------------------------------------------------------------------ main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=60)
    ap.add_argument("--paragraphs", type=int, default=16,
                    help="generate_bench_corpus paragraphs (16 gives ~8-15 chunks per document)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--raw-repeats", type=int, default=2, help="raw encode timings per phase (best kept)")
    ap.add_argument("--no-cold", action="store_true", help="skip the context run of a plain cold `ingest add`")
    ap.add_argument("--no-breakdown", action="store_true")
    ap.add_argument("--concurrency", type=int, default=None,
                    help="worker processes in phase A (default: not given, i.e. the pipeline's own default)")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--entities", action="store_true", help="also phase E: named entities on vs off")
    ap.add_argument("--entities-only", action="store_true", help="only phase E")
    ap.add_argument("--entity-rounds", type=int, default=2)
    a = ap.parse_args(argv)

    from corpora.generate import generate_bench_corpus
    from workers.app import embedded_broker

    from ingest.pipeline.document import folder_source

    res: dict = {"parameters": {"docs": a.docs, "paragraphs": a.paragraphs, "seed": a.seed,
                                "raw_repeats": a.raw_repeats,
                                "worker_concurrency": a.concurrency or "pipeline default",
                                "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                                "pipeline_model_id": _default_model_id(),
                                "raw_model_id": "sentence-transformers PyTorch (plain model id)"}}
    with work_dir(keep=a.keep) as work:
        corpus = work / "corpus"
        generate_bench_corpus(corpus, a.docs, seed=a.seed, paragraphs=a.paragraphs)
        warm = work / "warm"  # every worker process should see every parser family once
        n_warm = len(WARM_FORMATS) * max(2, cores())
        generate_bench_corpus(warm, n_warm, seed=a.seed + 100000, paragraphs=4, formats=WARM_FORMATS)
        chmod_tree(work)
        print(f"efficiency: {a.docs} documents, paragraphs={a.paragraphs}")
        if a.entities_only:
            ent = entities_compare(corpus, warm, work, a.concurrency, a.entity_rounds)
            return _entities_report(ent, res)

        # B0 + R1 -------------------------------------------------------------------
        groups = None
        if not a.no_breakdown:
            print("B0  in-process pipeline with stage timers ...", flush=True)
            bd, groups = breakdown(corpus, work / "breakdown.db")
            print(f"    {bd['docs']} docs, {bd['chunks']} chunks in {bd['total_s']:.2f}s "
                  f"-> {bd['chunks_per_s']:.1f} chunks/s", flush=True)
            res["breakdown_in_process"] = bd
            texts1 = [t for g in groups for t in g]
        else:
            from extractors import extract

            from ingest.pipeline.chunking import Chunker
            from ingest.pipeline.embed import get_embedder

            e = get_embedder()
            ch = Chunker(e.count_tokens, e.max_tokens)
            groups = [[c.embed_text for c in ch.chunk(extract(p).elements)] for p in sorted(corpus.iterdir())]
            texts1 = [t for g in groups for t in g]
        print("R1  raw encode (before) ...", flush=True)
        r1 = raw_encode(texts1, a.raw_repeats)
        r1_doc = raw_encode_per_doc(groups)
        print(f"    {r1['chunks_per_s']:.1f} chunks/s (one call), {r1_doc['chunks_per_s']:.1f} chunks/s "
              f"(one call per document)", flush=True)

        # A ---------------------------------------------------------------------------
        print("A   pipeline: warm `ingest worker` + `ingest add --broker ...` ...", flush=True)
        db = work / "index.db"
        broker = embedded_broker(db)
        worker = Worker(db, broker, a.concurrency)
        try:
            _, warm_s, _ = run_add([warm], db, broker)
            print(f"    worker start-up + warm-up ({n_warm} docs, {n_warm // len(WARM_FORMATS)} per format): "
                  f"{warm_s:.1f}s",
                  flush=True)
            cpu0 = worker.cpu_s()
            summary_a, wall_a, t0_a = run_add([corpus], db, broker)
            worker_cpu_a = worker.cpu_s() - cpu0
        finally:
            worker.stop()
        outs_a = batch_outcomes(db, summary_a["batch"])
        with sqlite3.connect(db) as c:
            chunks_a, docs_a = c.execute(
                "SELECT COUNT(*), COUNT(DISTINCT c.doc_id) FROM chunks c JOIN documents d ON d.doc_id=c.doc_id"
                " WHERE d.source=?", (folder_source(corpus),)).fetchone()
        embedded_a = sum(o["embedded"] for o in outs_a)
        if summary_a["outcomes"].get("indexed") != a.docs:
            raise RuntimeError(f"phase A did not index every document: {summary_a}")
        index_a = outs_a[-1]["ts"] - t0_a  # the command's start -> its last document stored (searchable)
        pipe_cps = chunks_a / index_a
        ss_a = steady_state(outs_a)
        # where the wall time goes: before the first document lands (CLI start, scan, queueing, the
        # first group's extraction + embedding), between the first and the last, after the last
        timeline_a = {"first_outcome_s": round(outs_a[0]["ts"] - t0_a, 3),
                      "first_to_last_outcome_s": round(outs_a[-1]["ts"] - outs_a[0]["ts"], 3),
                      "after_last_outcome_s": round(t0_a + wall_a - outs_a[-1]["ts"], 3)}
        print(f"    timeline: first document stored after {timeline_a['first_outcome_s']:.2f}s, last "
              f"{timeline_a['first_to_last_outcome_s']:.2f}s later, command done "
              f"{timeline_a['after_last_outcome_s']:.2f}s after that", flush=True)
        print(f"    {docs_a} docs, {chunks_a} chunks ({chunks_a / docs_a:.1f} chunks/doc) indexed in {index_a:.2f}s "
              f"-> {pipe_cps:.1f} chunks/s; {embedded_a} embeddings computed; the command (entities in) done "
              f"after {wall_a:.2f}s -> {chunks_a / wall_a:.1f} chunks/s", flush=True)
        # is the machine busy, and with what: the worker tree's CPU over the wall (cores in use)
        # and per chunk, against the in-process serial loop's wall per chunk (B0)
        cpu_a = {"worker_cpu_s": round(worker_cpu_a, 3), "cores_busy": round(worker_cpu_a / wall_a, 2),
                 "worker_cpu_ms_per_chunk": round(worker_cpu_a / chunks_a * 1000, 2)}
        res["phase_a_cpu"] = cpu_a
        bd_cpu = res.get("breakdown_in_process", {}).get("cpu_s")
        print(f"    worker CPU {worker_cpu_a:.2f}s = {cpu_a['cores_busy']:.2f} of {cores()} cores busy, "
              f"{cpu_a['worker_cpu_ms_per_chunk']:.1f} ms CPU per chunk"
              + (f" (in-process loop: {bd_cpu / res['breakdown_in_process']['chunks'] * 1000:.1f}, ONNX Runtime's"
                 " spinning pool threads included)" if bd_cpu else ""),
              flush=True)

        # R2 --------------------------------------------------------------------------
        print("R2  raw encode (after: the same model inputs, timed again) ...", flush=True)
        r2 = raw_encode(texts1, a.raw_repeats)
        print(f"    {r2['chunks_per_s']:.1f} chunks/s", flush=True)
        if len(store_texts(db, folder_source(corpus))) != len(texts1):
            print("    note: phase A stored a different number of chunks than the in-process run embedded")

        # C ---------------------------------------------------------------------------
        cold = None
        if not a.no_cold:
            print("C   context: plain cold `ingest add` (own worker, model load included) ...", flush=True)
            db_c = work / "cold.db"
            summary_c, wall_c, t_wall_c = run_add([corpus], db_c, None)
            outs_c = batch_outcomes(db_c, summary_c["batch"])
            with sqlite3.connect(db_c) as c:
                chunks_c = c.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
            ss_c = steady_state(outs_c)
            cold = {"wall_s": wall_c, "chunks": chunks_c, "chunks_per_s_wall": chunks_c / wall_c,
                    "start_to_first_outcome_s": outs_c[0]["ts"] - t_wall_c if outs_c else None,
                    "last_outcome_to_exit_s": (t_wall_c + wall_c - outs_c[-1]["ts"]) if outs_c else None,
                    "steady_state_from_outcomes": ss_c, "outcomes": summary_c["outcomes"]}
            print(f"    {wall_c:.2f}s wall ({chunks_c / wall_c:.1f} chunks/s incl. start-up); steady state "
                  f"{ss_c['chunks_per_s']:.1f} chunks/s", flush=True)

        ent = entities_compare(corpus, warm, work, a.concurrency, a.entity_rounds) if a.entities else None

    raw_best = max(r1["chunks_per_s"], r2["chunks_per_s"])
    ratio = pipe_cps / raw_best
    ratio_whole = chunks_a / wall_a / raw_best
    passed = ratio >= TARGET_RATIO
    res.update({
        "description": "pipeline chunks/s (an `ingest add` on a warm Celery worker, from its start to its last "
                       "document stored: queueing, extraction, chunking, embedding, storage; excludes the "
                       "worker's one-time model load/imports; named entities come after, on the maintenance "
                       "lane) over raw SentenceTransformer encode chunks/s on the same chunk texts; "
                       "ratio_whole_command: the same over the whole command, entities in",
        "method": __doc__,
        "target": {"ratio_min": TARGET_RATIO},
        "pass": passed,
        "ratio": ratio,
        "ratio_whole_command": ratio_whole,
        "chunks": chunks_a,
        "docs": docs_a,
        "chunks_per_doc": chunks_a / docs_a,
        "pipeline": {"wall_s": wall_a, "indexed_s": index_a, "entity_lag_s": wall_a - index_a,
                     "chunks_per_s": pipe_cps, "chunks_per_s_whole_command": chunks_a / wall_a, "embedded": embedded_a,
                     "worker_startup_and_warmup_s": warm_s, "outcomes": summary_a["outcomes"],
                     "steady_state_from_outcomes": ss_a, "timeline": timeline_a},
        "raw_before": r1, "raw_after": r2, "raw_best_chunks_per_s": raw_best,
        "raw_per_document_calls": r1_doc,
        "ratio_vs_raw_per_document_calls": pipe_cps / r1_doc["chunks_per_s"],
        "cold_ingest_add_context": cold,
    })

    print()
    rows = [("pipeline (ingest add, warm worker): indexed", f"{chunks_a}", f"{index_a:.2f}s", f"{pipe_cps:.1f}"),
            ("the same, whole command (entities in)", f"{chunks_a}", f"{wall_a:.2f}s", f"{chunks_a / wall_a:.1f}"),
            ("raw encode before", f"{r1['chunks']}", f"{r1['seconds']:.2f}s", f"{r1['chunks_per_s']:.1f}"),
            ("raw encode after", f"{r2['chunks']}", f"{r2['seconds']:.2f}s", f"{r2['chunks_per_s']:.1f}"),
            ("raw encode, one call per document", f"{r1_doc['chunks']}", f"{r1_doc['seconds']:.2f}s",
             f"{r1_doc['chunks_per_s']:.1f}")]
    if ss_a:
        rows.append(("pipeline steady state (outcome ts)", f"{ss_a['chunks']}", f"{ss_a['seconds']:.2f}s",
                     f"{ss_a['chunks_per_s']:.1f}"))
    if cold:
        rows.append(("cold ingest add incl. start-up", f"{cold['chunks']}", f"{cold['wall_s']:.2f}s",
                     f"{cold['chunks_per_s_wall']:.1f}"))
    if "breakdown_in_process" in res:
        bd = res["breakdown_in_process"]
        rows.append(("in-process Pipeline.handle loop", f"{bd['chunks']}", f"{bd['total_s']:.2f}s",
                     f"{bd['chunks_per_s']:.1f}"))
    print(table(rows, ("", "chunks", "time", "chunks/s")))
    print(f"\nchunks/doc: {chunks_a / docs_a:.1f}")
    if "breakdown_in_process" in res:
        bd = res["breakdown_in_process"]
        print("\nwhere the time goes (in-process, warm, all documents):")
        print(table([(k, f"{v:.2f}s", f"{bd['stages_share'][k]:.0%}") for k, v in bd["stages_s"].items()]
                    + [("total", f"{bd['total_s']:.2f}s", "100%")], ("stage", "time", "share")))
        pf = bd["per_format"]
        print("\nper format (in-process):")
        print(table([(f, int(v["docs"]), f"{v['chunks'] / v['docs']:.1f}", f"{v.get('extract', 0) / v['docs'] * 1000:.0f}",
                      f"{v.get('embed', 0) / v['docs'] * 1000:.0f}", f"{v['total'] / v['docs'] * 1000:.0f}")
                     for f, v in sorted(pf.items())],
                    ("format", "docs", "chunks/doc", "extract ms/doc", "embed ms/doc", "total ms/doc")))
        q_over = wall_a - bd["total_s"]
        print(f"\npipeline wall minus the serial in-process loop (B0): {q_over:+.2f}s "
              f"({q_over / max(1, docs_a) * 1000:+.0f} ms/doc; queueing/Celery/CLI cost, less whatever the "
              f"worker's parallel processes win back)")
        res["pipeline_wall_minus_in_process_loop_s"] = q_over
        embed_ms = bd["stages_s"]["embed"] / bd["chunks"] * 1000
        res["per_chunk_ms"] = {"embed": embed_ms,
                               "everything_else": (bd["total_s"] - bd["stages_s"]["embed"]) / bd["chunks"] * 1000,
                               "entities": bd["stages_s"]["entities"] / bd["chunks"] * 1000,
                               "extract": bd["stages_s"]["extract"] / bd["chunks"] * 1000}
        print(f"per chunk (in-process, serial wall): embedding {embed_ms:.1f} ms, everything else "
              f"{res['per_chunk_ms']['everything_else']:.1f} ms (entities {res['per_chunk_ms']['entities']:.1f}, "
              f"extract {res['per_chunk_ms']['extract']:.1f})")
    # the CPU budget: on N busy cores the target allows N / (target x raw) CPU seconds per chunk
    allowed_ms = cores() / (TARGET_RATIO * raw_best) * 1000
    res["phase_a_cpu"]["target_allows_cpu_ms_per_chunk"] = round(allowed_ms, 2)
    print(f"CPU per chunk: the worker spent {res['phase_a_cpu']['worker_cpu_ms_per_chunk']:.1f} ms; a ratio of "
          f"{TARGET_RATIO} on {cores()} cores allows {allowed_ms:.1f} ms")
    print(f"\nratio pipeline/raw = {pipe_cps:.1f} / {raw_best:.1f} = {ratio:.2f}; target >= {TARGET_RATIO}: "
          f"{verdict(passed)}")
    print(f"  (whole command, entities in: {chunks_a / wall_a:.1f} / {raw_best:.1f} = {ratio_whole:.2f}; entity lag "
          f"{wall_a - index_a:.2f}s after the last document stored)")
    if ent is not None:
        res["entities_cost"] = ent
        print(f"entities cost = 1 - {ent['chunks_per_s_on']:.1f} / {ent['chunks_per_s_off']:.1f} = {ent['cost']:.1%}; "
              f"target <= {TARGET_ENTITY_COST:.0%}: {verdict(ent['pass'])}")
        print(f"  (whole command: {ent['cost_whole_command']:.1%}; entity lag {ent['entity_lag_s']:.2f}s)")
    out = write_results(results_name(), res)
    print(f"wrote {out}")
    return 0 if passed else 1


def results_name() -> str:
    """``efficiency`` for the default backend (the figure of issue 16); ``efficiency-<backend>`` for
    another one chosen with ``$INGEST_EMBED_BACKEND`` (kept beside it, never over it)."""
    from ingest.embedding import DEFAULT_BACKEND, resolve_backend, split_model_id

    backend = split_model_id(_default_model_id())[1]
    return "efficiency" if backend == resolve_backend(DEFAULT_BACKEND) else f"efficiency-{backend}"


def _entities_report(ent: dict, res: dict) -> int:
    """--entities-only: keep the last full run's figures in the results file, replace entities_cost."""
    import json

    from _common import RESULTS

    path = RESULTS / f"{results_name()}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old.pop("benchmark", None)
    old["entities_cost"] = {**ent, "parameters": res["parameters"]}
    print(f"entities cost = 1 - {ent['chunks_per_s_on']:.1f} / {ent['chunks_per_s_off']:.1f} = {ent['cost']:.1%}; "
          f"target <= {TARGET_ENTITY_COST:.0%}: {verdict(ent['pass'])}")
    print(f"wrote {write_results(results_name(), old)}")
    return 0 if ent["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
