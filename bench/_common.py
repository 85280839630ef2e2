"""Shared helpers for the benchmark scripts (not a benchmark itself).

Every script sets the offline/telemetry environment before anything heavy is
imported, works in a world-searchable temp folder under /tmp, and writes
``bench/results/<name>.json`` with its figures, parameters and machine info.
"""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import json
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.support.common import stop_group, wait_for  # noqa: E402,F401  (one polling and one stopping helper)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_info() -> dict:
    info = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except Exception as e:  # pragma: no cover - torch is a hard dependency of the pipeline
        info["torch"] = f"unavailable: {e}"
    try:
        from ingest.cli import runner

        dc = getattr(runner, "default_concurrency", None)
        info["pipeline_default_worker_concurrency"] = dc() if dc else 1
    except Exception:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        info["loadavg_at_end"] = os.getloadavg()
    except OSError:
        pass
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                            text=True, timeout=10).stdout.strip() or None
    except Exception:
        info["git_commit"] = None
    return info


def write_results(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = dict(payload)
    payload.setdefault("benchmark", name)
    payload["machine"] = machine_info()
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return out


@contextmanager
def work_dir(keep: bool = False, prefix: str = "ingest-bench-"):
    """A temp folder whose ancestors are world-searchable (ACLs read as `everyone`)."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        if keep:
            print(f"(work files kept in {d})")
        else:
            shutil.rmtree(d, ignore_errors=True)


@contextmanager
def txt_corpus(keep: bool, name: str, folder: str, docs: int, seed: int):
    """``(work folder, corpus folder)``: ``docs`` one-paragraph text documents in ``work/folder``."""
    from corpora.generate import generate_bench_corpus

    with work_dir(keep, prefix=f"ingest-bench-{name}-") as work:
        generate_bench_corpus(work / folder, docs, seed=seed, formats=("txt",), paragraphs=1)
        yield work, work / folder


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def ingest_cmd(*args: str) -> list[str]:
    """`ingest ...` as the console script would run it (same interpreter as ours)."""
    return [sys.executable, "-m", "ingest.cli.main", *args]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank-with-interpolation percentile (p in 0..100)."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(values: list[float]) -> dict:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "max": max(values) if values else float("nan"),
        "min": min(values) if values else float("nan"),
        "mean": statistics.fmean(values) if values else float("nan"),
    }


def indexed_count(store_path) -> int:
    if not Path(store_path).exists():
        return 0
    try:
        with sqlite3.connect(store_path, timeout=30) as c:
            return c.execute("SELECT COUNT(*) FROM documents WHERE status='indexed'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


class IngestRun:
    """`ingest run` as a child process in its own session (like a terminal job)."""

    def __init__(self, roots, store, *extra: str):
        self.roots, self.store, self.extra = [str(r) for r in roots], str(store), list(extra)
        self.log = Path(str(store) + ".run.log")
        self.proc: subprocess.Popen | None = None
        self._logf = None

    def start(self, timeout: float = 120) -> "IngestRun":
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen(ingest_cmd("run", *self.roots, "--store", self.store, *self.extra),
                                     stdout=self._logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=child_env(), cwd=str(REPO))
        wait_for(lambda: "start-up scan queued" in self.log.read_text(errors="replace")
                 or self.proc.poll() is not None, timeout=timeout, what="`ingest run` to start")
        if self.proc.poll() is not None:
            raise RuntimeError("ingest run exited early:\n" + self.log.read_text(errors="replace")[-3000:])
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 90) -> int | None:
        stop_group(self.proc, signal.SIGINT, timeout)
        if self._logf is not None:
            self._logf.close()
            self._logf = None
        return self.proc.returncode if self.proc else None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def parse_json_summary(stdout: str) -> dict:
    """`ingest add --json` output; tolerate other lines before it (the worker it starts
    shares stdout and prints e.g. "worker: Warm shutdown (MainProcess)")."""
    if stdout.startswith("{"):
        return json.loads(stdout)
    i = stdout.find("\n{")
    if i < 0:
        raise RuntimeError(f"no JSON summary in `ingest add` output: {stdout[-1000:]!r}")
    return json.loads(stdout[i + 1:])


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def table(rows: list[tuple], headers: tuple | None = None) -> str:
    rows = [tuple(str(c) for c in r) for r in rows]
    if headers:
        rows = [tuple(str(h) for h in headers)] + rows
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if headers and j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def timed_cli(*args: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    p = subprocess.run(ingest_cmd(*args), capture_output=True, text=True, env=child_env(), cwd=str(REPO),
                       timeout=3600)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"ingest {args[0]} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
    return p.stdout, dt
