"""Cold command-line latency: ``ingest search`` (hybrid) on a 10k-chunk store, and ``ingest --help``.

    python bench/cli.py                 # 10,000 chunks, 5 cold runs per variant
    python bench/cli.py --runs 5 --chunks 10000
    python bench/cli.py --no-before    # without the PyTorch-query variant (slow on a loaded machine)

Each run is a fresh ``python -m ingest.cli search QUERY --store DB --as everyone`` process (what
the ``ingest`` entry point runs, ``ingest.cli:main``; a new query each time, so no query embedding
is cached), run from this checkout (``PYTHONPATH`` and the working directory are its root, so the
tree measured is the one the script lives in, not an installed one), timed wall clock from spawn
to exit; its CPU time (user + system, all threads) and peak RSS are the child's ``ru_utime +
ru_stime`` and ``ru_maxrss`` (``os.wait4``, spawned from a small launcher process: see
:class:`Launcher`). On a loaded machine the wall time is mostly waiting for a core: the CPU time
is the figure that compares across runs (the load average is recorded). The packages are
byte-compiled first (``compileall``), as an installed package is: with ``PYTHONDONTWRITEBYTECODE``
set every run would compile them again (about 45 ms of CPU per run here). Caches a cold
process uses and the first run makes (the optimised ONNX graph beside the model file, the vector
matrix beside the store) are made by one untimed run per variant. ``python -c pass`` is timed
beside ``ingest --help`` (the interpreter's floor). Variants, side by side in one run:

* ``torch store, torch query``: a store of the PyTorch backend with
  ``INGEST_QUERY_BACKEND=torch`` (the query embedded by sentence-transformers: how it was);
* ``torch store``: the same store, the query through the ONNX fp32 export (the default);
* ``onnx-int8 store``: a store of the int8 backend (its queries through int8);
* ``bm25``: ``--mode bm25`` on the int8 store (no model at all: the floor).

The store: ``bench/search.py``'s builder (real SciFact sentences, 3 chunks per document,
ACLs; vectors: real embeddings of 300 base texts plus noise), one per backend. One more cold
search per store runs under a wrapper that reports whether torch / sentence_transformers got
imported. Targets: median cold hybrid search <= 1.5 s, ``ingest --help`` <= 0.3 s.
Writes ``bench/results/cli.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, cores, write_results  # noqa: E402

import search as search_bench  # noqa: E402  (bench/search.py: the store builder)

TARGET_SEARCH_S = 1.5
TARGET_HELP_S = 0.3
PROBE = ("import sys, runpy; sys.argv = ['ingest'] + sys.argv[1:]\n"
         "try:\n    runpy.run_module('ingest.cli', run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         "print('HEAVY', sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules),"
         " file=sys.stderr)")


LAUNCHER = r"""
import json, os, sys, time
for line in sys.stdin:
    cmd, env = json.loads(line)
    fd = os.open(os.devnull, os.O_WRONLY)
    t0 = time.monotonic()
    try:
        pid = os.posix_spawn(cmd[0], cmd, env, file_actions=[(os.POSIX_SPAWN_DUP2, fd, 1)])
    finally:
        os.close(fd)
    _, status, ru = os.wait4(pid, 0)
    print(json.dumps([time.monotonic() - t0, ru.ru_maxrss, os.waitstatus_to_exitcode(status),
                      ru.ru_utime + ru.ru_stime]), flush=True)
"""


class Launcher:
    """Spawns the timed children from a small helper process started before this one loads
    numpy/torch: on Linux a child's ``ru_maxrss`` starts at the high-water RSS of the process
    that spawned it (``exec`` records the old address space's peak), so children spawned from
    this benchmark (1 GiB+ once the models are loaded) would all report its peak, not theirs."""

    def __init__(self):
        self.p = subprocess.Popen([sys.executable, "-I", "-S", "-c", LAUNCHER], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, cwd=REPO)  # `-m` looks in the cwd first

    def run(self, cmd: list[str], env: dict) -> tuple[float, int, float]:
        """(wall seconds, the child's own peak RSS in KiB, its CPU seconds) of one process:
        posix_spawn + wait4."""
        self.p.stdin.write(json.dumps([cmd, env]) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise SystemExit("bench/cli.py: the launcher process died")
        wall, rss, rc, cpu = json.loads(line)
        if rc != 0:
            raise SystemExit(f"{' '.join(cmd[:6])}... exited {rc}")
        return wall, rss, cpu

    def close(self):
        self.p.stdin.close()
        self.p.wait(30)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chunks", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--base", type=int, default=300, help="real embeddings the synthetic vectors derive from")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-compile", action="store_true", help="do not byte-compile the packages first")
    ap.add_argument("--no-before", action="store_true",
                    help="skip the 'torch store, torch query' variant (each run imports PyTorch: ~10 s+)")
    a = ap.parse_args(argv)
    launcher = Launcher()  # first, while this process is small
    run_child = launcher.run

    import numpy as np

    from ingest.pipeline.embed import get_embedder, with_backend, DEFAULT_MODEL

    sents = search_bench.sentences(search_bench.CORPUS)
    rnd = random.Random(a.seed)
    base_texts = [" ".join(rnd.sample(sents, 3)) for _ in range(a.base)]
    queries = list(dict.fromkeys(json.loads(line)["text"] for line in open(search_bench.CORPUS / "queries.jsonl")))
    rnd.shuffle(queries)
    stores = {}
    for backend in ("torch", "onnx-int8"):
        search_bench.WORK = REPO / "bench" / "work" / "cli" / backend
        os.environ["INGEST_EMBED_BACKEND"] = backend
        vecs = np.asarray(get_embedder(with_backend(DEFAULT_MODEL, backend)).encode(base_texts), dtype=np.float32)
        stores[backend] = search_bench.build(a.chunks, sents, base_texts, vecs, 0.03, a.seed)
    os.environ.pop("INGEST_EMBED_BACKEND", None)

    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("INGEST_QUERY_BACKEND", None)
    py = sys.executable
    if not a.no_compile:  # bytecode, as an installed package has it (children read it even when told not to write)
        subprocess.run([py, "-m", "compileall", "-q", *(str(REPO / d) for d in ("ingest", "acl", "extractors", "workers"))],
                       check=True, stdout=subprocess.DEVNULL)
    load_start = os.getloadavg()
    variants = {
        "torch store, torch query (before)": (stores["torch"], "hybrid", {"INGEST_QUERY_BACKEND": "torch"}),
        "torch store, onnx query": (stores["torch"], "hybrid", {}),
        "onnx-int8 store": (stores["onnx-int8"], "hybrid", {}),
        "bm25 (no model)": (stores["onnx-int8"], "bm25", {}),
    }
    if a.no_before:
        variants.pop("torch store, torch query (before)")
    qi = iter(queries)
    # one untimed run per variant first: builds a missing ONNX file and the caches a cold process
    # keeps (optimised graph, vector matrix), warms the page cache
    for db, mode, extra in variants.values():
        run_child([py, "-m", "ingest.cli", "search", next(qi), "--store", str(db), "--as", "everyone",
                   "--mode", mode], {**env, **extra})
    results = {}
    for _ in range(a.runs):  # interleaved, so load on the machine hits every variant alike
        for name, (db, mode, extra) in variants.items():
            w, rss, cpu = run_child([py, "-m", "ingest.cli", "search", next(qi), "--store", str(db), "--as",
                                     "everyone", "--mode", mode], {**env, **extra})
            r = results.setdefault(name, {"wall_s": [], "cpu_s": [], "peak_rss_mib": []})
            r["wall_s"].append(round(w, 3))
            r["cpu_s"].append(round(cpu, 3))
            r["peak_rss_mib"].append(round(rss / 1024, 1))
    helps, floor, help_cpu = [], [], []
    for _ in range(a.runs):  # the interpreter's own start, side by side: the floor --help stands on
        w, _, cpu = run_child([py, "-m", "ingest.cli", "--help"], env)
        helps.append(round(w, 3))
        help_cpu.append(round(cpu, 3))
        floor.append(round(run_child([py, "-c", "pass"], env)[0], 3))
    launcher.close()
    heavy = {}
    for name, (db, mode, extra) in variants.items():
        p = subprocess.run([py, "-c", PROBE, "search", next(qi), "--store", str(db), "--as", "everyone", "--mode", mode],
                           capture_output=True, text=True, env={**env, **extra}, cwd=REPO)
        line = [ln for ln in p.stderr.splitlines() if ln.startswith("HEAVY")]
        heavy[name] = line[-1][6:] if line else f"? rc={p.returncode}"

    print(f"\ncold `ingest search` on {a.chunks} chunks, {a.runs} runs each (interleaved):")
    print(f"{'variant':<36} {'median s':>9} {'min s':>7} {'max s':>7} {'CPU s':>6} {'peak RSS MiB':>13}  heavy imports")
    for name, r in results.items():
        r["median_s"] = round(statistics.median(r["wall_s"]), 3)
        r["median_cpu_s"] = round(statistics.median(r["cpu_s"]), 3)
        r["median_peak_rss_mib"] = round(statistics.median(r["peak_rss_mib"]), 1)
        r["heavy_imports"] = heavy[name]
        print(f"{name:<36} {r['median_s']:>9.3f} {min(r['wall_s']):>7.3f} {max(r['wall_s']):>7.3f} "
              f"{r['median_cpu_s']:>6.3f} {r['median_peak_rss_mib']:>13.1f}  {heavy[name]}")
    help_med = statistics.median(helps)
    floor_med = statistics.median(floor)
    print(f"`ingest --help`: median {help_med:.3f} s (runs {helps}, CPU median {statistics.median(help_cpu):.3f} s); "
          f"`python -c pass` median {floor_med:.3f} s (the interpreter alone, same run)")
    print(f"load average {load_start[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end ({cores()} cores)")
    default = results["onnx-int8 store"]["median_s"]
    ok = default <= TARGET_SEARCH_S and results["torch store, onnx query"]["median_s"] <= TARGET_SEARCH_S \
        and help_med <= TARGET_HELP_S
    print(f"cold hybrid search median {default:.3f} s (int8 store), "
          f"{results['torch store, onnx query']['median_s']:.3f} s (torch store) (target <= {TARGET_SEARCH_S} s); "
          f"--help {help_med:.3f} s (target <= {TARGET_HELP_S} s): {'PASS' if ok else 'FAIL'}")
    out = write_results("cli", {"chunks": a.chunks, "runs": a.runs, "search": results, "help_s": helps,
                                "help_median_s": round(help_med, 3), "help_cpu_s": help_cpu,
                                "help_median_cpu_s": round(statistics.median(help_cpu), 3),
                                "python_startup_s": floor, "python_startup_median_s": round(floor_med, 3), "target_search_s": TARGET_SEARCH_S,
                                "target_help_s": TARGET_HELP_S, "pass": ok,
                                "load_avg_start": load_start, "load_avg": os.getloadavg(),
                                "cores": cores(), "bytecode_compiled": not a.no_compile})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
