"""Run one parse in a child process with a wall-clock limit and a memory limit.

Parses run in a sandbox process forked from the worker and reused for up to
``INGEST_SANDBOX_MAX_TASKS`` (200) parses; a fork per document would cost ~20 ms in a
worker that holds a model. A parser that hangs, blows up its memory or crashes (a
segfault in a C library) takes down only that process, which is replaced: the caller gets an ``ExtractionError`` with a specific
reason (``timeout after 60 s in pdf/ocr``, ``memory limit of 2048 MiB exceeded in
docx``, ``parser crashed (signal 11 SIGSEGV) in xlsx``) and goes on. The place named
is the stage the parse last announced with :func:`stage` (a page of shared memory
the parent reads when it gives up on the child): the format family the router
dispatched to, or a finer step such as ``pdf/text`` or ``pdf/ocr``; the caller's
``label`` (the file extension) until the parse names one.

The child is forked from the worker process, so parsers, models and imports the
worker has warmed are there at no cost; it runs in its own process group, so tools a
parser starts (tesseract, LibreOffice) die with it on a timeout. The memory limit is
an address-space limit (RLIMIT_AS) of the child's current size plus the budget:
address space, not resident memory, is what can be bounded before the fact.
Only the result crosses back, pickled through a pipe.
"""
from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import resource
import select
import signal
import time
from typing import Any, Callable

from .base import ExtractionError
from .errors import ErrorCode

DEFAULT_TIMEOUT_S = float(os.environ.get("INGEST_PARSE_TIMEOUT", "120"))
DEFAULT_MEMORY_MB = int(os.environ.get("INGEST_PARSE_MEMORY_MB", "2048"))
_STAGE_BYTES = 128
_stage_buf: mmap.mmap | None = None  # set in a sandbox process: shared with its parent


def stage(name: str) -> None:
    """Name what the parse is doing now ("pdf", "pdf/ocr"); a timeout, memory kill or
    crash is then reported "in <stage>". A no-op outside a sandbox process."""
    if _stage_buf is not None:
        data = name.encode("utf-8", "replace")[:_STAGE_BYTES - 1]
        _stage_buf[:] = data + b"\0" * (_STAGE_BYTES - len(data))


def _read_stage(buf: mmap.mmap, default: str) -> str:
    name = bytes(buf[:]).split(b"\0", 1)[0].decode("utf-8", "replace")
    return name or default


def _vm_size() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _serve(req: int, res: int, memory_mb: int | None) -> None:
    """The body of a reusable sandbox process: run requests until told to stop or
    recycled; any failure ends the process (the parent starts a fresh one)."""
    try:
        import faulthandler

        faulthandler.disable()
        os.setpgid(0, 0)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if memory_mb:
            limit = _vm_size() + memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        while True:
            head = _read_exact(req, 8)
            if head is None:
                break
            fn, args, kwargs, label = pickle.loads(_read_exact(req, int.from_bytes(head, "big")))
            stage(label)
            try:
                result: tuple = ("ok", fn(*args, **kwargs))
            except ExtractionError as e:
                result = ("err", e.code, e.message)
            except MemoryError:
                where = _read_stage(_stage_buf, label) if _stage_buf is not None else label
                result = ("err!", ErrorCode.MEMORY, f"memory limit of {memory_mb} MiB exceeded in {where}")
            except RecursionError:
                result = ("err", ErrorCode.CORRUPT, f"{label}: structure nested too deeply (recursion limit)")
            except BaseException as e:  # noqa: BLE001 - reported to the parent, never swallowed
                result = ("err", ErrorCode.EXTRACTOR_CRASH, f"{label}: {type(e).__name__}: {e}")
            try:
                data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as e:  # noqa: BLE001
                data = pickle.dumps(("err", ErrorCode.EXTRACTOR_CRASH, f"{label}: result not transferable: {e}"))
            _write_all(res, len(data).to_bytes(8, "big") + data)
            if result[0] == "err!":  # memory may be fragmented or half-freed: start afresh
                break
    finally:
        os._exit(0)


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class _Server:
    """A forked sandbox process reused for many parses (a fork per document costs
    ~20 ms in a worker holding a model); killed and replaced on a timeout, a crash,
    a memory error, or after ``max_tasks`` parses."""

    def __init__(self, memory_mb: int | None):
        self.memory_mb = memory_mb
        self.count = 0
        req_r, self.req_w = os.pipe()
        self.res_r, res_w = os.pipe()
        self.stage = mmap.mmap(-1, _STAGE_BYTES)  # anonymous, MAP_SHARED: survives the fork
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the sandbox process
            global _stage_buf
            _stage_buf = self.stage
            os.close(self.req_w)
            os.close(self.res_r)
            _serve(req_r, res_w, memory_mb)
        os.close(req_r)
        os.close(res_w)
        self.owner = os.getpid()

    def kill(self) -> int:
        for fd in (self.req_w, self.res_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        for kill in (lambda: os.killpg(self.pid, signal.SIGKILL), lambda: os.kill(self.pid, signal.SIGKILL)):
            try:
                kill()
            except (ProcessLookupError, PermissionError):
                pass
        _, status = os.waitpid(self.pid, 0)
        return status

    def call(self, fn, args, kwargs, timeout: float, label: str):
        data = pickle.dumps((fn, args, kwargs, label), protocol=pickle.HIGHEST_PROTOCOL)
        self.count += 1
        try:
            _write_all(self.req_w, len(data).to_bytes(8, "big") + data)
        except BrokenPipeError:
            return None  # it had exited (recycled): the caller starts a fresh one
        deadline = time.monotonic() + timeout
        buf = bytearray()
        need = 8
        while len(buf) < need:
            left = deadline - time.monotonic()
            if left <= 0:
                where = _read_stage(self.stage, label)
                self.kill()
                raise ExtractionError(ErrorCode.TIMEOUT, f"timeout after {timeout:.0f} s in {where}")
            ready, _, _ = select.select([self.res_r], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(self.res_r, 1 << 20)
            if not chunk:  # the process died mid-parse
                label = _read_stage(self.stage, label)
                status = self.kill()
                if os.WIFSIGNALED(status):
                    sig = os.WTERMSIG(status)
                    name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
                    if sig == signal.SIGKILL:
                        raise ExtractionError(ErrorCode.MEMORY, f"parser killed (SIGKILL, likely out of memory) in {label}")
                    raise ExtractionError(ErrorCode.EXTRACTOR_CRASH, f"parser crashed (signal {sig} {name}) in {label}")
                raise ExtractionError(ErrorCode.EXTRACTOR_CRASH, f"parser exited without a result in {label}")
            buf += chunk
            if need == 8 and len(buf) >= 8:
                need = 8 + int.from_bytes(buf[:8], "big")
        return pickle.loads(bytes(buf[8:need]))


_servers: dict[int | None, _Server] = {}
MAX_TASKS_PER_SANDBOX = int(os.environ.get("INGEST_SANDBOX_MAX_TASKS", "200"))


def run(fn: Callable[..., Any], *args, timeout: float | None = None, memory_mb: int | None = None,
        label: str = "parser", **kwargs) -> Any:
    """``fn(*args, **kwargs)`` in a sandbox process under limits; returns its result or
    raises ``ExtractionError`` (codes: timeout, memory, extractor-crash, or the parser's
    own). ``fn`` and its arguments must be picklable (module-level functions)."""
    timeout = DEFAULT_TIMEOUT_S if timeout is None else timeout
    memory_mb = DEFAULT_MEMORY_MB if memory_mb is None else memory_mb
    for attempt in range(2):
        server = _servers.get(memory_mb)
        if server is not None and (server.owner != os.getpid() or server.count >= MAX_TASKS_PER_SANDBOX):
            if server.owner == os.getpid():
                server.kill()  # recycled: memory held by earlier parses is given back
            server = None
        if server is None:
            server = _servers[memory_mb] = _Server(memory_mb)
        fresh = server.count == 0
        try:
            result = server.call(fn, args, kwargs, timeout, label)
        except ExtractionError as e:
            _servers.pop(memory_mb, None)
            if e.code == ErrorCode.MEMORY and not fresh and attempt == 0:
                continue  # maybe earlier parses' memory: try once more in a fresh process
            raise
        except BaseException:  # interrupted while waiting (the task's time limit): its answer is nobody's
            _servers.pop(memory_mb, None)
            server.kill()
            raise
        if result is None:  # it had gone away between parses: start a fresh one
            server.kill()
            _servers.pop(memory_mb, None)
            continue
        if result[0] == "ok":
            return result[1]
        if result[0] == "err!":
            server.kill()
            _servers.pop(memory_mb, None)
            if not fresh and attempt == 0:
                continue
        raise ExtractionError(result[1], result[2])
    raise ExtractionError(ErrorCode.EXTRACTOR_CRASH, f"sandbox could not be started for {label}")
