"""Folder source: ignore rules, coalescing, the real watchdog watcher, walk()."""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time

import pytest

from ingest.sources.base import DELETE, MOVE, RESCAN, UPSERT, ChangeEvent
from ingest.sources.folder import Coalescer, FolderWatcher, walk
from ingest.sources.ignore import is_ignored

DEBOUNCE = 0.1
WAIT = 3.0  # max seconds to wait for expected events
SETTLE = 0.4  # quiet period to be sure nothing else follows


# --------------------------------------------------------------------------
# ignore rules
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "~$report.docx",
        "sub/~$report.docx",
        ".~lock.x.odt#",
        "a.tmp",
        "A.TMP",
        "x.docx.tmp",
        "b.temp",
        ".a.swp",
        ".a.swo",
        ".a.swx",
        "4913",
        "notes.txt~",
        ".#notes.txt",
        "#notes.txt#",
        ".DS_Store",
        "d/Thumbs.db",
        "thumbs.db",
        "desktop.ini",
        "movie.mkv.part",
        "x.pdf.crdownload",
        ".git",
        ".git/config",
        "proj/.git/objects/ab/cdef",
        "a/.svn/entries",
        "pkg/__pycache__/m.cpython-311.pyc",
        ".ingest/state.db",
    ],
)
def test_ignored(path):
    assert is_ignored(path)


@pytest.mark.parametrize(
    "path",
    ["", "report.docx", "a/b/c.pdf", "x.tmp/real.docx", "old~/a.txt", "49130", "git/config", ".gitignore", "a.temporary"],
)
def test_not_ignored(path):
    assert not is_ignored(path)


def test_dir_scope():
    # a directory named like a temp file is still a directory of documents
    assert not is_ignored("x.tmp", is_dir=True)
    assert is_ignored("a/.git", is_dir=True)
    assert is_ignored("a/__pycache__/x", is_dir=True)


# --------------------------------------------------------------------------
# coalescer (pure, explicit clock)
# --------------------------------------------------------------------------


def feed(*events, debounce=1.0):
    c = Coalescer(debounce, max_delay=100.0)
    for i, ev in enumerate(events):
        c.add(*ev, now=float(i) * 0.01)
    return c


def test_coalesce_basic_rules():
    assert feed((UPSERT, "a"), (UPSERT, "a"), (UPSERT, "a")).pop_all() == [(UPSERT, "a", None)]
    assert feed((UPSERT, "a"), (DELETE, "a")).pop_all() == [(DELETE, "a", None)]
    assert feed((DELETE, "a"), (UPSERT, "a")).pop_all() == [(UPSERT, "a", None)]
    assert feed((MOVE, "a", "b"), (UPSERT, "b")).pop_all() == [(MOVE, "a", "b")]
    assert feed((UPSERT, "a"), (MOVE, "a", "b")).pop_all() == [(MOVE, "a", "b")]
    assert sorted(feed((MOVE, "a", "b"), (DELETE, "b")).pop_all()) == [(DELETE, "a", None), (DELETE, "b", None)]
    assert sorted(feed((MOVE, "a", "b"), (MOVE, "b", "c")).pop_all()) == [(DELETE, "b", None), (MOVE, "a", "c")]
    assert sorted(feed((MOVE, "a", "b"), (MOVE, "b", "a")).pop_all()) == [(DELETE, "b", None), (UPSERT, "a", None)]
    assert feed((UPSERT, "b"), (MOVE, "a", "b")).pop_all() == [(MOVE, "a", "b")]
    assert feed((MOVE, "a", "a")).pop_all() == [(UPSERT, "a", None)]


def test_coalesce_move_onto_pending_move_retires_source():
    # s->b then a->b: s is gone, b now holds a's file
    assert sorted(feed((MOVE, "s", "b"), (MOVE, "a", "b")).pop_all()) == [(DELETE, "s", None), (MOVE, "a", "b")]
    # ...unless s got a newer event of its own, which then describes it
    out = feed((MOVE, "s", "b"), (UPSERT, "s"), (MOVE, "a", "b")).pop_all()
    assert sorted(out) == [(MOVE, "a", "b"), (UPSERT, "s", None)]


def test_move_is_emitted_before_later_events_on_its_source():
    c = Coalescer(1.0, max_delay=100.0)
    c.add(MOVE, "a", "b", now=0.0)  # a renamed to b ...
    c.add(UPSERT, "a", now=0.1)  # ... and a new file a written
    c.add(UPSERT, "b", now=0.9)  # b keeps getting touched: its debounce restarts
    assert c.next_deadline() == pytest.approx(1.1)
    # a is due, b is not, but b's MOVE must precede the new a
    assert c.pop_due(1.15) == [(MOVE, "a", "b"), (UPSERT, "a", None)]
    assert len(c) == 0


def test_debounce_and_max_delay():
    c = Coalescer(1.0, max_delay=5.0)
    for t in range(5):
        c.add(UPSERT, "log.txt", now=float(t))
        assert c.pop_due(t + 0.5) == []
    c.add(UPSERT, "other", now=4.5)
    assert c.pop_due(5.0) == [(UPSERT, "log.txt", None)]  # max_delay reached
    assert c.pop_due(5.49) == []
    assert c.pop_due(5.5) == [(UPSERT, "other", None)]


def test_rescan_merging():
    c = feed((RESCAN, "a/b/c"), (RESCAN, "a/b"), (RESCAN, "a/b/d"), (RESCAN, "x"))
    assert sorted(c.pop_all()) == [(RESCAN, "a/b", None), (RESCAN, "x", None)]
    c = feed((RESCAN, "a"), (RESCAN, ""), (RESCAN, "b"))
    assert c.pop_all() == [(RESCAN, "", None)]


# --------------------------------------------------------------------------
# the real watcher
# --------------------------------------------------------------------------


class Collector:
    def __init__(self):
        self.events: list[ChangeEvent] = []
        self.batches: list[list[ChangeEvent]] = []
        self._cond = threading.Condition()

    def __call__(self, batch):
        with self._cond:
            self.batches.append(list(batch))
            self.events.extend(batch)
            self._cond.notify_all()

    def wait_for(self, pred, timeout=WAIT):
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred(self.events):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out; got {self.events!r}")
                self._cond.wait(left)

    def wait_quiet(self, expected, settle=SETTLE):
        """Wait until ``expected`` (a list) has arrived, then make sure
        nothing else follows for ``settle`` seconds; return all events."""
        self.wait_for(lambda evs: len(evs) >= len(expected))
        time.sleep(settle)
        with self._cond:
            return list(self.events)


@pytest.fixture
def watch(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    started = []

    def _start(debounce=DEBOUNCE, emit=None, **kw):
        col = Collector()
        w = FolderWatcher(root, emit or col, debounce=debounce, **kw)
        w.start()
        started.append(w)
        return w, col

    yield root, _start
    for w in started:
        w.stop(flush=False)


def ev(kind, root, path, dest=None):
    return ChangeEvent(kind, str(root), path, dest)


def test_create_written_in_three_steps_gives_one_upsert(watch):
    root, start = watch
    w, col = start()
    with open(root / "a.txt", "w") as f:
        f.write("one")
        f.flush()
        time.sleep(0.02)
        f.write("two")
        f.flush()
    time.sleep(0.02)
    with open(root / "a.txt", "a") as f:
        f.write("three")
    assert col.wait_quiet([1]) == [ev(UPSERT, root, "a.txt")]
    assert len(col.batches) == 1


def test_modify(watch):
    root, start = watch
    (root / "a.txt").write_text("x")
    w, col = start()
    (root / "a.txt").write_text("changed")
    assert col.wait_quiet([1]) == [ev(UPSERT, root, "a.txt")]


def test_chmod_is_upsert(watch):
    root, start = watch
    (root / "a.txt").write_text("x")
    w, col = start()
    os.chmod(root / "a.txt", 0o600)
    assert col.wait_quiet([1]) == [ev(UPSERT, root, "a.txt")]


def test_delete(watch):
    root, start = watch
    (root / "a.txt").write_text("x")
    w, col = start()
    os.remove(root / "a.txt")
    assert col.wait_quiet([1]) == [ev(DELETE, root, "a.txt")]


def test_rename_is_move(watch):
    root, start = watch
    (root / "sub").mkdir()
    (root / "a.txt").write_text("x")
    w, col = start()
    os.rename(root / "a.txt", root / "sub" / "b.txt")
    assert col.wait_quiet([1]) == [ev(MOVE, root, "a.txt", "sub/b.txt")]


def test_reading_a_file_causes_nothing(watch):
    root, start = watch
    (root / "a.txt").write_text("x")
    w, col = start()
    for _ in range(3):
        (root / "a.txt").read_text()
    (root / "sentinel").write_text("s")
    assert col.wait_quiet([1]) == [ev(UPSERT, root, "sentinel")]


def test_ignored_files_produce_nothing(watch):
    root, start = watch
    w, col = start()
    for name in ["~$x.docx", ".~lock.x.odt#", "a.tmp", ".a.swp", "4913", "x.txt~"]:
        (root / name).write_text("junk")
        os.chmod(root / name, 0o600)
        os.remove(root / name)
    (root / ".git").mkdir()
    (root / ".git" / "index").write_text("junk")
    os.chmod(root / ".git", 0o700)
    (root / "sentinel").write_text("s")
    assert col.wait_quiet([1]) == [ev(UPSERT, root, "sentinel")]


def test_atomic_save_via_tmp_rename(watch):
    root, start = watch
    w, col = start()
    (root / "x.docx.tmp").write_text("content")
    os.rename(root / "x.docx.tmp", root / "x.docx")
    assert col.wait_quiet([1]) == [ev(UPSERT, root, "x.docx")]


def test_office_style_save_coalesces(watch):
    # Word: rename original to a temp name, write the new file, delete the temp
    root, start = watch
    (root / "x.docx").write_text("v1")
    w, col = start()
    os.rename(root / "x.docx", root / "~WRL0001.tmp")
    (root / "~WRD0000.tmp").write_text("v2")
    os.rename(root / "~WRD0000.tmp", root / "x.docx")
    os.remove(root / "~WRL0001.tmp")
    assert col.wait_quiet([1]) == [ev(UPSERT, root, "x.docx")]


def test_dir_chmod_is_rescan(watch):
    root, start = watch
    d = root / "d"
    d.mkdir()
    (d / "f1.txt").write_text("1")
    (d / "f2.txt").write_text("2")
    w, col = start()
    os.chmod(d, 0o700)
    assert col.wait_quiet([1]) == [ev(RESCAN, root, "d")]


def test_new_dir_with_files_then_chmod(watch):
    root, start = watch
    w, col = start()
    d = root / "d"
    d.mkdir()
    (d / "f1.txt").write_text("1")
    os.chmod(d, 0o700)
    col.wait_for(lambda evs: ev(RESCAN, root, "d") in evs and ev(UPSERT, root, "d/f1.txt") in evs)


def test_dir_moved_in_from_outside(watch, tmp_path):
    root, start = watch
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.txt").write_text("1")
    w, col = start()
    os.rename(outside, root / "in")
    col.wait_for(lambda evs: ev(RESCAN, root, "in") in evs)


def test_dir_move_rescans_both(watch):
    root, start = watch
    (root / "old").mkdir()
    (root / "old" / "f.txt").write_text("1")
    w, col = start()
    os.rename(root / "old", root / "new")
    col.wait_for(lambda evs: {ev(RESCAN, root, "old"), ev(RESCAN, root, "new")} <= set(evs))


def test_stop_flush_emits_pending_immediately(watch):
    root, start = watch
    w, col = start(debounce=30.0)
    (root / "a.txt").write_text("x")
    os.remove(root / "a.txt")
    (root / "b.txt").write_text("y")
    deadline = time.monotonic() + WAIT
    while w.pending < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert col.events == []
    t0 = time.monotonic()
    w.stop(flush=True)
    assert time.monotonic() - t0 < 2.5
    assert col.events == [ev(DELETE, root, "a.txt"), ev(UPSERT, root, "b.txt")]


def test_stop_flush_catches_file_moved_out_just_before(watch, tmp_path):
    # watchdog holds an unpaired IN_MOVED_FROM back for 0.5 s before turning it
    # into a delete; stop() must wait for it rather than drop it.
    root, start = watch
    (root / "a.txt").write_text("x")
    w, col = start(debounce=30.0)
    os.rename(root / "a.txt", tmp_path / "a.txt")
    w.stop(flush=True)
    assert col.events == [ev(DELETE, root, "a.txt")]


def test_stop_without_flush_drops_and_context_manager(tmp_path):
    col = Collector()
    with FolderWatcher(tmp_path, col, debounce=30.0) as w:
        (tmp_path / "a.txt").write_text("x")
        deadline = time.monotonic() + WAIT
        while not w.pending and time.monotonic() < deadline:
            time.sleep(0.01)
    assert col.events == [ev(UPSERT, tmp_path, "a.txt")]  # __exit__ flushes

    col2 = Collector()
    w = FolderWatcher(tmp_path, col2, debounce=30.0)
    w.start()
    (tmp_path / "b.txt").write_text("x")
    deadline = time.monotonic() + WAIT
    while not w.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    w.stop(flush=False)
    w.stop()  # idempotent
    assert col2.events == []


def test_emit_exception_is_logged_and_thread_survives(watch, caplog):
    root, start = watch
    col = Collector()
    calls = []

    def emit(batch):
        calls.append(batch)
        if len(calls) == 1:
            raise RuntimeError("boom")
        col(batch)

    w, _ = start(emit=emit)
    with caplog.at_level(logging.ERROR, logger="ingest.sources.folder"):
        (root / "first.txt").write_text("secret content")
        deadline = time.monotonic() + WAIT
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        (root / "second.txt").write_text("x")
        col.wait_for(lambda evs: ev(UPSERT, root, "second.txt") in evs)
    assert any("emit failed" in r.getMessage() for r in caplog.records)
    assert "secret content" not in caplog.text


# --------------------------------------------------------------------------
# walk
# --------------------------------------------------------------------------


def _tree(root, files):
    for rel in files:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)


def test_walk_lists_regular_non_ignored_files(tmp_path):
    _tree(tmp_path, ["a.txt", "d/b.pdf", "d/e/c.docx", "d/~$b.docx", "a.tmp", ".git/config", "x.tmp/real.txt"])
    os.symlink(tmp_path / "a.txt", tmp_path / "link.txt")
    os.symlink(tmp_path / "d", tmp_path / "linkdir")
    os.mkfifo(tmp_path / "fifo")
    got = dict(walk(tmp_path))
    assert sorted(got) == ["a.txt", "d/b.pdf", "d/e/c.docx", "x.tmp/real.txt"]
    assert got["a.txt"].st_size == len("a.txt")


def test_walk_survives_vanishing_files_and_dirs(tmp_path):
    _tree(tmp_path, ["a/f1", "a/f2", "b/f3", "c/f4"])
    got = []
    for rel, _st in walk(tmp_path):
        got.append(rel)
        if rel == "a/f1":
            os.remove(tmp_path / "a" / "f2")  # listed already, stat will fail
            shutil.rmtree(tmp_path / "b")  # not listed yet
    assert got == ["a/f1", "c/f4"]


def test_walk_root_missing_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(walk(tmp_path / "nope"))


def _walk_as_nobody(root):
    """Run walk() in a forked child that dropped root privileges."""
    r, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            errors: list[str] = []
            paths = [p for p, _ in walk(root, errors=errors)]
            os.write(wfd, json.dumps([paths, errors]).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_walk_unreadable_subdir(caplog):
    base = tempfile.mkdtemp()
    try:
        os.chmod(base, 0o755)
        _tree(__import__("pathlib").Path(base), ["a/f1", "locked/secret", "z/f2"])
        os.chmod(os.path.join(base, "locked"), 0)
        if os.geteuid() == 0:
            paths, errors = _walk_as_nobody(base)
        else:
            errors = []
            with caplog.at_level(logging.WARNING, logger="ingest.sources.folder"):
                paths = [p for p, _ in walk(base, errors=errors)]
            assert "cannot list" in caplog.text
        assert paths == ["a/f1", "z/f2"]
        assert errors == ["locked"]
    finally:
        os.chmod(os.path.join(base, "locked"), 0o755)
        shutil.rmtree(base)


def test_start_on_missing_root_raises(tmp_path):
    w = FolderWatcher(tmp_path / "nope", lambda batch: None)
    with pytest.raises(NotADirectoryError):
        w.start()
    w.stop()  # harmless
