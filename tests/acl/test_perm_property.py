"""Property: a watched tree under random attacks never leaks (issue 13).

A seeded random sequence of ``INGEST_PROPERTY_STEPS`` steps (default 60, the suite's run; the
recorded run is 500: the same seed, so its first 60 steps are these) acts on a real
tree watched by the real :class:`~ingest.sources.folder.FolderWatcher` feeding the real
pipeline (and :class:`~ingest.sources.permwatch.PermissionWatch` polled every 0.5 s, as
``ingest run`` does): writes, renames, symlink swaps (to files of other users), FIFOs,
deletes, chmod/chown/setfacl of files and directories, ``gpasswd`` membership changes,
directory moves, and chmod of the directory above the root. After each step, once
the index is quiescent, for every user (real OS users ``h13a_*``) and every mode
(bm25, vector, hybrid) each hit must be a regular file the kernel lets that user open
(asked of ``open()`` in a child process running as the user), holding only words of
files that user can read; and ``ingest access`` (:func:`ingest.search.access.explain`) must
say ``deny`` for every indexed document the kernel does not let the user read.

The time from a step until the index had absorbed it (the last event's work done) is
recorded per kind of step; for steps that remove a permission it is the time until
the removal had taken effect. Figures of a run of 500 steps or more go to
``bench/results/perm_property.json`` (``INGEST_PROPERTY_STEPS=500 python -m pytest
tests/acl/test_perm_property.py``); a shorter run prints them and writes no committed file.
"""
from __future__ import annotations

import json
import math
import os
import queue
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from acl.directory import Directory
from ingest.search.access import explain
from ingest.pipeline.document import Pipeline
from ingest.search.index import Index
from ingest.sources.base import RESCAN, ChangeEvent
from tests.support.attackers import USERS, ensure_users

pytestmark = pytest.mark.slow
STEPS = int(os.environ.get("INGEST_PROPERTY_STEPS", "60"))
RECORDED_STEPS = 500  # a run this long is the one whose figures are kept
SEED = int(os.environ.get("PERM_PROPERTY_SEED", "13"))
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "perm_property.json"
FILE_MODES = [0o600, 0o640, 0o644, 0o604, 0o400, 0o004, 0o000, 0o444]
DIR_MODES = [0o755, 0o750, 0o711, 0o700, 0o705, 0o710, 0o701]
OWNERS = ["root", *USERS]
GROUPS = ["root", "h13a_team", "h13a_other", "h13a_x"]
REMOVALS = {"chmod", "chown", "setfacl", "gpasswd", "dir_chmod", "dir_chown", "above_chmod", "symlink_swap",
            "delete", "fifo", "dir_move", "rename"}

ORACLE = r"""
import json, os, stat, sys
req = json.load(sys.stdin)
out = {}
for user, (uid, gid, groups) in req["users"].items():
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        res = {}
        try:
            os.setgroups(groups); os.setresgid(gid, gid, gid); os.setresuid(uid, uid, uid)
            for p in req["paths"]:
                try:
                    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
                except OSError:
                    continue
                try:
                    if stat.S_ISREG(os.fstat(fd).st_mode):
                        res[p] = os.read(fd, 65536).decode("utf-8", "replace")
                finally:
                    os.close(fd)
        finally:
            os.write(w, json.dumps(res).encode()); os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 1 << 16):
        data += chunk
    os.waitpid(pid, 0)
    out[user] = json.loads(data)
json.dump(out, sys.stdout)
"""


class Kernel:
    """What each user can read, asked of the kernel (one child per user, setresuid)."""

    def __init__(self, users):
        import pwd

        self.ids = {}
        for u in users:
            pw = pwd.getpwnam(u)
            self.ids[u] = (pw.pw_uid, pw.pw_gid, 0)

    def readable(self, paths: list[str]) -> dict[str, dict[str, str]]:
        ids = {u: (uid, gid, os.getgrouplist(u, gid)) for u, (uid, gid, _) in self.ids.items()}
        r = subprocess.run([sys.executable, "-c", ORACLE], input=json.dumps({"users": ids, "paths": paths}),
                           capture_output=True, text=True, check=True)
        return json.loads(r.stdout)


class Harness:
    """Watcher + PermissionWatch -> one worker thread -> the pipeline (like ``ingest run``)."""

    def __init__(self, root: Path, store, embedder):
        from ingest.sources.folder import FolderWatcher
        from ingest.sources.permwatch import PermissionWatch

        self.root = str(root)
        self.pipe = Pipeline(store, embedder, sandbox=False)
        self.q: queue.Queue = queue.Queue()
        self.last_done = self.last_poll = time.monotonic()
        self.errors: list[BaseException] = []
        self.watcher = FolderWatcher(root, self.q.put, debounce=0.05)
        self.perms = PermissionWatch([self.root])
        self._stop = threading.Event()
        self.worker = threading.Thread(target=self._work, daemon=True)
        self.poller = threading.Thread(target=self._poll, daemon=True)

    def start(self):
        self.watcher.start()
        self.worker.start()
        self.poller.start()
        self.q.put([ChangeEvent(RESCAN, self.root, "")])
        return self

    def stop(self):
        self._stop.set()
        self.watcher.stop(flush=False)
        self.q.put(None)
        self.worker.join(10)
        self.poller.join(10)

    def _poll(self):
        while not self._stop.wait(0.5):
            for r in self.perms.changed():
                self.q.put([ChangeEvent(RESCAN, r, "")])
            self.last_poll = time.monotonic()

    def _work(self):
        while True:
            batch = self.q.get()
            try:
                if batch is None:
                    return
                for ev in batch:
                    self.pipe.handle(ev)
                self.last_done = time.monotonic()
            except BaseException as e:  # noqa: BLE001 - reported by the test
                self.errors.append(e)
            finally:
                self.q.task_done()

    def quiesce(self, timeout=120.0, polled_after: float | None = None):
        """Wait until no event is pending, queued or being worked on, for 0.15 s (and, with
        ``polled_after``, until the permission poll has run since then)."""
        t0, calm = time.monotonic(), 0
        while calm < 4 or (polled_after is not None and self.last_poll <= polled_after):
            if time.monotonic() - t0 > timeout:
                import faulthandler

                faulthandler.dump_traceback(all_threads=True)
                raise AssertionError(f"the index did not settle: pending {self.watcher.pending}, "
                                     f"queued {self.q.unfinished_tasks}, errors {self.errors[:3]}")
            time.sleep(0.04)
            busy = self.watcher.pending or self.q.unfinished_tasks
            calm = 0 if busy else calm + 1


class World:
    """The tree and the random steps."""

    def __init__(self, base: Path, rnd: random.Random):
        self.rnd = rnd
        self.base = base
        self.top = base / "top"  # the directory above the root
        self.root = self.top / "root"
        self.outside = base / "outside"
        for d in (self.root / "d0" / "s", self.root / "d1", self.outside):
            d.mkdir(parents=True, exist_ok=True)
        for d in (base, self.top, self.root, self.root / "d0", self.root / "d1", self.root / "d0" / "s", self.outside):
            os.chmod(d, 0o755)
        self.n = 0
        self.secrets = []
        for u in USERS:  # files outside the root that only their owner may read: symlink targets
            p = self.outside / f"{u}.secret"
            p.write_text(f"common sec{u[5:]} private words of {u}\n")
            self._chown(p, u, GROUPS[0])
            os.chmod(p, 0o600)
            self.secrets.append(p)

    def _chown(self, p, user, group):
        import grp
        import pwd

        os.chown(p, pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid, follow_symlinks=False)

    def dirs(self) -> list[Path]:
        return [Path(dp) for dp, dn, fn in os.walk(self.root)]

    def entries(self) -> list[Path]:
        out = []
        for dp, dn, fn in os.walk(self.root):
            out += [Path(dp) / f for f in fn if not f.startswith("index.db")]
        return out

    def files(self) -> list[Path]:
        return [p for p in self.entries() if p.is_file() and not p.is_symlink()]

    def token(self) -> str:
        self.n += 1
        return f"tok{self.n}"

    def step(self) -> str:
        r = self.rnd
        files = self.files()
        kinds = ["write"] * 4 + ["rename", "symlink_swap", "fifo", "delete", "chmod", "chmod", "chown", "setfacl",
                                 "setfacl", "gpasswd", "dir_chmod", "dir_chown", "dir_move", "above_chmod"]
        kind = r.choice(kinds if files else ["write"])
        f = r.choice(files) if files else None
        if kind == "write":
            d = r.choice(self.dirs())
            p = r.choice([p for p in files if p.parent == d] or [d / f"f{self.n}.txt"]) if r.random() < 0.4 \
                else d / f"f{self.n}.txt"
            if p.is_symlink() or (p.exists() and not p.is_file()):
                p.unlink()
            p.write_text(f"common {self.token()} words for the property test\n")
            if r.random() < 0.5:
                os.chmod(p, r.choice(FILE_MODES))
        elif kind == "rename":
            d = r.choice(self.dirs())
            dest = r.choice(files) if r.random() < 0.3 else d / f"f{self.token()}.txt"
            os.rename(f, dest)
        elif kind == "symlink_swap":
            tmp = f.parent / f"L{self.token()}.txt"
            os.symlink(r.choice(self.secrets + files), tmp)
            os.rename(tmp, f)
        elif kind == "fifo":
            f.unlink()
            os.mkfifo(f)
        elif kind == "delete":
            f.unlink()
        elif kind == "chmod":
            os.chmod(f, r.choice(FILE_MODES))
        elif kind == "chown":
            self._chown(f, r.choice(OWNERS), r.choice(GROUPS))
        elif kind == "setfacl":
            target = r.choice([f, r.choice(self.dirs()[1:])])
            spec = r.choice(["u:h13a_bob:r", "u:h13a_carol:---", "g:h13a_x:r", "g:h13a_team:---", "m::---",
                             "m::r", "u:h13a_alice:rx", "g:h13a_x:x", "u:h13a_carol:x"])
            args = ["-b"] if r.random() < 0.15 else ["-m", spec]
            subprocess.run(["setfacl", *args, str(target)], check=True, capture_output=True)
        elif kind == "gpasswd":
            u = r.choice(["h13a_bob", "h13a_carol"])
            subprocess.run(["gpasswd", r.choice(["-a", "-d"]), u, "h13a_x"], capture_output=True)
        elif kind == "dir_chmod":
            os.chmod(r.choice(self.dirs()[1:]), r.choice(DIR_MODES))
        elif kind == "dir_chown":
            self._chown(r.choice(self.dirs()[1:]), r.choice(OWNERS), r.choice(GROUPS))
        elif kind == "dir_move":
            s = next((d for d in self.dirs() if d.name.startswith("s")), None)
            if s is not None:
                other = self.root / ("d1" if s.parent.name == "d0" else "d0")
                os.rename(s, other / f"s{self.token()}")
        elif kind == "above_chmod":
            os.chmod(self.top, r.choice([0o755, 0o711, 0o750, 0o700, 0o701]))
        return kind


def _p95(v: list[float]) -> float:
    return sorted(v)[min(len(v) - 1, math.ceil(0.95 * len(v)) - 1)]  # nearest rank


def _path_of(uri: str) -> str:
    return unquote(urlparse(uri).path)


def test_watched_tree_never_leaks_under_random_attacks(embedder, tmp_path_factory):
    if os.geteuid() != 0:
        from tests.support.ci import missing

        missing("the permission property test needs root (real users, chown, setfacl)")
    ensure_users()
    embedder.encode(["warm up the model before the clock starts"])
    for u in ("h13a_bob", "h13a_carol"):
        subprocess.run(["gpasswd", "-d", u, "h13a_x"], capture_output=True)
    import tempfile

    from ingest.stores.sqlite import SQLiteStore

    base = Path(tempfile.mkdtemp(prefix="h13a-prop-", dir="/tmp"))
    rnd = random.Random(SEED)
    world = World(base, rnd)
    store = SQLiteStore(base / "index.db")
    h = Harness(world.root, store, embedder).start()
    kernel = Kernel(list(USERS))
    index = Index(store, Directory())
    latency: dict[str, list[float]] = {}
    checks = leaks = misses = 0
    try:
        h.quiesce()
        for step in range(STEPS):
            t_op = time.monotonic()
            kind = world.step()
            h.quiesce(polled_after=t_op if kind in ("gpasswd", "above_chmod") else None)
            assert not h.errors, h.errors
            if h.last_done > t_op:
                latency.setdefault(kind, []).append(h.last_done - t_op)
            readable = kernel.readable([str(p) for p in world.entries()])
            for user in USERS:
                can = readable[user]
                words = {w for text in can.values() for w in text.split()}
                for mode in ("bm25", "vector", "hybrid"):
                    for hit in index.search("common words property", principal=user, k=100, mode=mode, audit=False):
                        path = _path_of(hit.uri)
                        checks += 1
                        ok = path in can and not os.path.islink(path) and set(hit.text.split()) <= words
                        if not ok:
                            leaks += 1
                            pytest.fail(f"step {step} ({kind}): {user} got {path} in {mode} "
                                        f"(kernel: {'readable' if path in can else 'not readable'}): {hit.text!r}")
                for row in store.docs_for_source(f"folder:{world.root}").values():
                    if row["status"] != "indexed":
                        continue
                    d = explain(store, row["doc_id"], user, Directory())
                    path = _path_of(d["uri"])
                    checks += 1
                    if d["decision"] == "allow" and path not in can:
                        leaks += 1
                        pytest.fail(f"step {step} ({kind}): ingest access says allow for {user} on {path}, "
                                    f"the kernel says no")
                    if d["decision"] == "deny" and path in can and not os.path.islink(path):
                        misses += 1  # not a leak: reported, not failed
    finally:
        h.stop()
        store.close()
        for u in ("h13a_bob", "h13a_carol"):
            subprocess.run(["gpasswd", "-d", u, "h13a_x"], capture_output=True)
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    summary = {
        "steps": STEPS, "seed": SEED, "checks": checks, "leaks": leaks, "misses": misses,
        "latency_s": {k: {"n": len(v), "p50": round(statistics.median(v), 3),
                          "p95": round(_p95(v), 3), "max": round(max(v), 3)}
                      for k, v in sorted(latency.items())},
        "note": "latency: from the step to the end of the index work it caused (the removal is in effect "
                "then); above_chmod and gpasswd are polled every 0.5 s (PermissionWatch)",
    }
    removal = [x for k, v in latency.items() if k in REMOVALS for x in v]
    summary["removal_latency_s"] = {"n": len(removal), "p50": round(statistics.median(removal), 3),
                                    "p95": round(_p95(removal), 3),
                                    "max": round(max(removal), 3)} if removal else None
    if STEPS >= RECORDED_STEPS:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    assert leaks == 0 and checks > STEPS
