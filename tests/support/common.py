"""What many tests share: repository paths, the corpora, running reconcile events through a
pipeline, asking the kernel whether a user can read a file, waiting for a condition, and
``ingest run`` as a child process."""
from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

from tests.support.ci import missing

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
CORPORA = SHARED / "corpora"


def need_corpora() -> Path:
    if not CORPORA.is_dir():
        missing(f"{CORPORA} is missing: real-document tests need ../shared/corpora beside the checkout")
    return CORPORA


def run_events(pipeline, root, subtree=""):
    from ingest.sources.reconcile import reconcile

    outs = []
    for ev in reconcile(pipeline.store, str(root), subtree=subtree):
        outs.extend(pipeline.handle(ev))
    return outs


def acl_delete_move(pipeline, root: Path) -> None:
    """The churn besides content edits, for the outbox and sink catch-up tests: ACL-only changes
    (doc05, doc06), deletes (doc07, doc08) and a move (doc09 -> renamed09), then a reconcile."""
    os.chmod(root / "doc05.txt", 0o600)
    os.chmod(root / "doc06.txt", 0o640)
    (root / "doc07.txt").unlink()
    (root / "doc08.txt").unlink()
    os.rename(root / "doc09.txt", root / "renamed09.txt")
    run_events(pipeline, root)


def http_json(url: str, token: str | None = None, method: str = "GET") -> tuple[int, dict]:
    """``(status, JSON body)`` of an HTTP request, with a bearer token when given; errors too."""
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class RecordingEmbedder:
    """Wraps a real embedder: ``calls`` holds each encode call's size, ``inputs`` every text embedded."""

    def __init__(self, inner):
        self.inner, self.calls, self.inputs = inner, [], []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, texts):
        self.calls.append(len(texts))
        self.inputs.extend(texts)
        return self.inner.encode(texts)


def kernel_can_read(user: str, path: str) -> bool:
    """Ask the kernel: can this user open the file for reading?"""
    pw = pwd.getpwnam(user)
    code = ("import os,sys\n"
            f"os.setgroups(os.getgrouplist({pw.pw_name!r}, {pw.pw_gid}))\n"
            f"os.setgid({pw.pw_gid}); os.setuid({pw.pw_uid})\n"
            "try:\n open(sys.argv[1],'rb').close(); print('yes')\n"
            "except PermissionError: print('no')\n")
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, check=True)
    return out.stdout.strip() == "yes"


def stop_group(proc, sig: int, timeout: float) -> None:
    """Send ``sig`` to a child started with ``start_new_session``; SIGKILL its whole process group
    when it has not ended within ``timeout`` seconds."""
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def wait_for(pred, timeout=30.0, interval=0.05, what="condition"):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class IngestRun:
    """`ingest run` as a real child process (its own session, like a terminal job)."""

    def __init__(self, roots, store, *extra):
        self.roots, self.store, self.extra = [str(r) for r in roots], str(store), list(extra)
        self.log = Path(str(store) + ".run.log")
        self.proc = None

    def start(self, wait_ready=True):
        self._logf = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "ingest.cli.main", "run", *self.roots, "--store", self.store,
                                      *self.extra], stdout=self._logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        if wait_ready:
            mark = self.log.read_text().count("start-up scan queued")
            wait_for(lambda: self.log.read_text().count("start-up scan queued") > mark or self.proc.poll() is not None,
                     timeout=60, what="ingest run to start")
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
        return self

    def stop(self, sig=None, timeout=90):
        import signal as _s

        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig or _s.SIGINT)
            self.proc.wait(timeout)
        self._logf.close()
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        import signal as _s

        if self.proc and self.proc.poll() is None:
            try:
                self.stop()
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, _s.SIGKILL)
                raise


def indexed_count(store_path) -> int:
    import sqlite3

    if not Path(store_path).exists():
        return 0
    with sqlite3.connect(store_path, timeout=30) as c:
        try:
            return c.execute("SELECT COUNT(*) FROM documents WHERE status='indexed'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0
