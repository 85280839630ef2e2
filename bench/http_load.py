"""`/search` latency through `ingest serve` while slow webhook clients hang on to it.

    python bench/http_load.py                     # 200 searches per phase, 50 slow clients
    python bench/http_load.py --queries 100 --slow 50 --no-baseline

A real `ingest serve` (subprocess, default [serve] settings) over a store built by `ingest add` from
60 generated documents; GET /search?q=...&k=10 (hybrid; 20 query texts in turn, so after the warm-up the
query embeddings come from the cache and the figure is the server and the store). Phases, in one run:

* *idle*: searches one after another;
* *slow*: the same while ``--slow`` clients each POST /hooks/h with Content-Length 4096 and trickle one
  body byte (half of them: one header byte) every 0.2 s, so every one of them stays mid-request (the
  slowloris of issue 13, defect 9);
* *flood*: the same while 4 threads POST forged webhooks back to back (each gets 401);
* *baseline* (``--no-baseline`` skips it): the server this replaced (cheroot, 8 threads) with the
  slow clients attached: each search has ``--baseline-timeout`` seconds, and the timeouts are counted.

Printed and written to ``bench/results/http.json``: p50/p95/max per phase and p95(slow)/p95(idle),
p95(flood)/p95(idle) (target: within 2x).
"""
from __future__ import annotations

import os
import sys

import argparse
import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from _common import child_env, ingest_cmd, summary, wait_for, work_dir, write_results

TOKEN = "bench-token-" + "z" * 24
WORDS = ("harbour dredging contract crane terminal estuary library budget reading room canteen vegetables "
         "tender pupils invoice audit council bridge tram timetable archive permit zoning").split()
QUERIES = [f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7 + 3) % len(WORDS)]}" for i in range(20)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(d: Path) -> Path:
    docs = d / "docs"
    docs.mkdir()
    for i in range(60):
        words = [WORDS[(i * 3 + j * j) % len(WORDS)] for j in range(120)]
        (docs / f"d{i:02d}.txt").write_text(f"Report {i}\n\n" + " ".join(words) + ".\n")
    os.chmod(docs, 0o755)
    store = d / "index.db"
    subprocess.run(ingest_cmd("add", str(docs), "--store", str(store)), env=child_env(), check=True,
                   capture_output=True, timeout=900)
    return store


def loopback(url: str) -> str:
    """``url`` when it names this machine's loopback server (the benchmark's own); the benchmark
    never reaches the network."""
    if urllib.parse.urlsplit(url).hostname != "127.0.0.1":
        raise ValueError(f"{url}: the benchmark talks only to its own server on 127.0.0.1")
    return url


def search(base: str, q: str, timeout: float = 30.0) -> float:
    url = loopback(f"{base}/search?" + urllib.parse.urlencode({"q": q, "k": 10}))
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout) as r:
        assert r.status == 200 and "hits" in json.loads(r.read())
    return time.perf_counter() - t


class SlowClients:
    """``n`` connections that each stay mid-request, one byte every ``every`` seconds."""

    def __init__(self, port: int, n: int, every: float = 0.2):
        self.port, self.n, self.every = port, n, every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.reconnects = 0

    def _open(self, i: int):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        head = (f"POST /hooks/h HTTP/1.1\r\nHost: x\r\nX-Ingest-Timestamp: {int(time.time())}\r\n"
                f"X-Ingest-Delivery: slow-{i}\r\nContent-Length: 4096\r\n\r\n").encode()
        rest = head if i % 2 else b""
        if i % 2 == 0:
            s.sendall(head)  # even: headers sent, body trickles; odd: the headers themselves trickle
        return [s, rest]

    def _run(self):
        conns = [self._open(i) for i in range(self.n)]
        while not self.stop.wait(self.every):
            for i, c in enumerate(conns):
                try:
                    if c[1]:
                        c[0].send(c[1][:1])
                        c[1] = c[1][1:]
                    else:
                        c[0].send(b"x")
                except OSError:  # dropped by the server (request deadline): come back, as an attacker would
                    c[0].close()
                    conns[i] = self._open(i)
                    self.reconnects += 1
        for c in conns:
            c[0].close()

    def __enter__(self):
        self.thread.start()
        time.sleep(1.0)  # all attached
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


def flood(port: int, stop: threading.Event, counter: list):
    body = b'{"EventName": "s3:ObjectCreated:Put"}'
    while not stop.is_set():
        req = urllib.request.Request(loopback(f"http://127.0.0.1:{port}/hooks/h"), data=body, method="POST", headers={
            "X-Ingest-Timestamp": str(int(time.time())), "X-Ingest-Delivery": "f", "X-Ingest-Signature": "sha256=00"})
        try:
            urllib.request.urlopen(req, timeout=10).close()
        except urllib.error.HTTPError as e:
            counter[0] += e.code == 401
        except OSError:
            pass


def phase(base: str, n: int) -> list[float]:
    return [search(base, QUERIES[i % len(QUERIES)]) for i in range(n)]


def serve(cfg: Path, store: Path, port: int, baseline: bool = False) -> subprocess.Popen:
    if baseline:
        code = ("import sys; from cheroot import wsgi; from ingest import config; from ingest.serve.app import Dispatcher;"
                f"s = wsgi.Server(('127.0.0.1', {port}), Dispatcher({str(store)!r}, config.load({str(cfg)!r})),"
                " numthreads=8); s.start()")
        cmd = [sys.executable, "-c", code]
    else:
        cmd = ingest_cmd("serve", "--store", str(store), "--config", str(cfg), "--port", str(port))
    p = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    wait_for(up, 60, what="ingest serve listening")
    return p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--slow", type=int, default=50)
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--baseline-queries", type=int, default=5)
    ap.add_argument("--baseline-timeout", type=float, default=5.0)
    a = ap.parse_args()
    out: dict = {"params": vars(a)}
    with work_dir(prefix="ingest-bench-http-") as d:
        store = build(d)
        os.environ["BENCH_TOKEN"] = TOKEN
        cfg = d / "config.toml"
        cfg.write_text('[serve.tokens]\n"env:BENCH_TOKEN" = "everyone"\n'
                       '[webhooks.h]\nscheme = "hmac"\nsource = "nowhere"\nsecret = "bench-secret"\n')
        port = free_port()
        proc = serve(cfg, store, port)
        base = f"http://127.0.0.1:{port}"
        try:
            search(base, QUERIES[0], timeout=600)  # the first one loads the model
            phase(base, 40)  # warm-up: vectors, query-embedding cache
            idle = phase(base, a.queries)
            with SlowClients(port, a.slow) as slow_clients:
                slow = phase(base, a.queries)
            out["slow_client_reconnects"] = slow_clients.reconnects
            stop, refused = threading.Event(), [0]
            threads = [threading.Thread(target=flood, args=(port, stop, refused), daemon=True) for _ in range(4)]
            for t in threads:
                t.start()
            flooded = phase(base, a.queries)
            stop.set()
            for t in threads:
                t.join(15)
            out["flood_refused_401"] = refused[0]
            idle2 = phase(base, a.queries)  # idle again: how noisy the machine was
        finally:
            proc.terminate()
            proc.wait(20)
        out["idle"], out["slow"], out["flood"], out["idle_again"] = (summary(x) for x in (idle, slow, flooded, idle2))
        ref = out["idle"]["p95"]
        out["p95_ratio_slow_vs_idle"] = out["slow"]["p95"] / ref
        out["p95_ratio_flood_vs_idle"] = out["flood"]["p95"] / ref
        out["p95_ratio_idle_again_vs_idle"] = out["idle_again"]["p95"] / ref
        if not a.no_baseline:
            bport = free_port()
            bproc = serve(cfg, store, bport, baseline=True)
            bbase = f"http://127.0.0.1:{bport}"
            try:
                search(bbase, QUERIES[0], timeout=600)
                phase(bbase, 10)
                b_idle = phase(bbase, min(a.queries, 50))
                times, timeouts = [], 0
                with SlowClients(bport, a.slow):
                    for i in range(a.baseline_queries):
                        try:
                            times.append(search(bbase, QUERIES[i], timeout=a.baseline_timeout))
                        except OSError:
                            timeouts += 1
            finally:
                bproc.terminate()
                bproc.wait(20)
            out["baseline_cheroot_8_threads"] = {"idle": summary(b_idle), "slow": summary(times) if times else None,
                                                 "slow_timeouts": timeouts, "slow_attempts": a.baseline_queries,
                                                 "timeout_s": a.baseline_timeout}
    path = write_results("http", out)
    ms = lambda s: f"p50 {s['p50'] * 1e3:7.1f} ms  p95 {s['p95'] * 1e3:7.1f} ms  max {s['max'] * 1e3:7.1f} ms"  # noqa: E731
    print(f"/search through `ingest serve` (waitress), {a.queries} searches per phase, {a.slow} slow clients")
    for k in ("idle", "slow", "flood", "idle_again"):
        print(f"  {k:10s} {ms(out[k])}")
    print(f"  p95 slow/idle  = {out['p95_ratio_slow_vs_idle']:.2f}x   (target <= 2x)")
    print(f"  p95 flood/idle = {out['p95_ratio_flood_vs_idle']:.2f}x   ({out['flood_refused_401']} forged hooks refused)")
    b = out.get("baseline_cheroot_8_threads")
    if b:
        print(f"  baseline cheroot 8 threads: idle {ms(b['idle'])}; with {a.slow} slow clients "
              f"{b['slow_timeouts']}/{b['slow_attempts']} searches timed out after {b['timeout_s']} s")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
