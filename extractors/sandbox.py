"""Run one parse in a child process with a wall-clock limit and a memory limit.

A parser that hangs, blows up its memory or crashes (a segfault in a C library)
takes down only that child: the caller gets an ``ExtractionError`` with a specific
reason (``timeout after 60 s in pdf``, ``memory limit of 2048 MiB exceeded in
docx``, ``parser crashed (signal 11 SIGSEGV) in xlsx``) and goes on.

The child is forked from the worker process, so parsers, models and imports the
worker has warmed are there at no cost; it runs in its own process group, so tools a
parser starts (tesseract, LibreOffice) die with it on a timeout. The memory limit is
an address-space limit (RLIMIT_AS) of the child's current size plus the budget:
address space, not resident memory, is what can be bounded before the fact.
Only the result crosses back, pickled through a pipe.
"""
from __future__ import annotations

import os
import pickle
import resource
import select
import signal
import time
from typing import Any, Callable

from .base import ExtractionError

DEFAULT_TIMEOUT_S = float(os.environ.get("INGEST_PARSE_TIMEOUT", "120"))
DEFAULT_MEMORY_MB = int(os.environ.get("INGEST_PARSE_MEMORY_MB", "2048"))


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _child(fn: Callable, args: tuple, kwargs: dict, w: int, memory_mb: int | None, label: str) -> None:
    try:
        import faulthandler

        faulthandler.disable()  # a parser crash is reported by the parent, not dumped here
        os.setpgid(0, 0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if memory_mb:
            limit = _vm_size() + memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            result: tuple = ("ok", fn(*args, **kwargs))
        except ExtractionError as e:
            result = ("err", e.code, e.message)
        except MemoryError:
            result = ("err", "memory", f"memory limit of {memory_mb} MiB exceeded in {label}")
        except RecursionError:
            result = ("err", "corrupt", f"{label}: structure nested too deeply (recursion limit)")
        except BaseException as e:  # noqa: BLE001 - reported to the parent, never swallowed
            result = ("err", "extractor-crash", f"{label}: {type(e).__name__}: {e}")
        try:
            data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001
            data = pickle.dumps(("err", "extractor-crash", f"{label}: result not transferable: {e}"))
        view = memoryview(data)
        while view:
            n = os.write(w, view)
            view = view[n:]
    finally:
        os._exit(0)


def run(fn: Callable[..., Any], *args, timeout: float | None = None, memory_mb: int | None = None,
        label: str = "parser", **kwargs) -> Any:
    """``fn(*args, **kwargs)`` in a forked child under limits; returns its result or raises
    ``ExtractionError`` (codes: timeout, memory, extractor-crash, or the parser's own)."""
    timeout = DEFAULT_TIMEOUT_S if timeout is None else timeout
    memory_mb = DEFAULT_MEMORY_MB if memory_mb is None else memory_mb
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(r)
        _child(fn, args, kwargs, w, memory_mb, label)
    os.close(w)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([r], [], [], min(left, 1.0))
            if ready:
                data = os.read(r, 1 << 20)
                if not data:
                    break
                chunks.append(data)
    finally:
        os.close(r)
        if timed_out:
            for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
                try:
                    kill()
                except ProcessLookupError:
                    pass
        _, status = os.waitpid(pid, 0)
    if timed_out:
        raise ExtractionError("timeout", f"timeout after {timeout:.0f} s in {label}")
    try:  # tools the parser started must not outlive it
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        if sig == signal.SIGKILL:
            raise ExtractionError("memory", f"parser killed (SIGKILL, likely out of memory) in {label}")
        raise ExtractionError("extractor-crash", f"parser crashed (signal {sig} {name}) in {label}")
    if not chunks:
        raise ExtractionError("extractor-crash", f"parser exited without a result in {label}")
    result = pickle.loads(b"".join(chunks))
    if result[0] == "ok":
        return result[1]
    raise ExtractionError(result[1], result[2])
