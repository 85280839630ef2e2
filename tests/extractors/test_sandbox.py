"""The parse sandbox: a hang, a memory blow-up or a crash costs one child, never the caller."""
import ctypes
import time

import pytest

from extractors import sandbox
from extractors.base import ExtractionError


def _sleep(s):
    time.sleep(s)
    return "slept"


def _hog():
    blocks = []
    while True:
        blocks.append(bytearray(64 * 1024 * 1024))


def _segfault():
    ctypes.string_at(0)


def _raise():
    raise ExtractionError("encrypted", "password required")


def _bug():
    return {}["missing"]


def _spawn_and_hang(marker, started):
    import subprocess

    subprocess.Popen(["sleep", marker])
    open(started, "w").close()
    time.sleep(300)


def test_result_comes_back():
    assert sandbox.run(_sleep, 0.01, timeout=10) == "slept"
    assert sandbox.run(sorted, [3, 1, 2], timeout=10) == [1, 2, 3]


def test_timeout_kills_only_the_child():
    t = time.monotonic()
    with pytest.raises(ExtractionError) as e:
        sandbox.run(_sleep, 60, timeout=1, label="pdf/ocr")
    assert e.value.code == "timeout" and e.value.message == "timeout after 1 s in pdf/ocr"
    assert time.monotonic() - t < 5


def test_timeout_also_kills_tools_the_parser_started(tmp_path):
    import random
    import subprocess

    marker = f"{300 + random.random():.9f}"  # this run's tool only: not another run's leftover `sleep 300`
    started = tmp_path / "started"
    with pytest.raises(ExtractionError):
        sandbox.run(_spawn_and_hang, marker, str(started), timeout=2)
    assert started.exists()  # the tool was running when the parse timed out
    time.sleep(0.3)
    assert subprocess.run(["pgrep", "-f", f"^sleep {marker}$"], capture_output=True).stdout == b""


def test_memory_limit():
    with pytest.raises(ExtractionError) as e:
        sandbox.run(_hog, timeout=60, memory_mb=256, label="xlsx")
    assert e.value.code == "memory" and "256 MiB" in e.value.message


def test_crash_is_reported_with_the_signal():
    with pytest.raises(ExtractionError) as e:
        sandbox.run(_segfault, timeout=10, label="docx")
    assert e.value.code == "extractor-crash" and "SIGSEGV" in e.value.message and "docx" in e.value.message


def test_parser_errors_and_bugs_keep_their_meaning():
    with pytest.raises(ExtractionError) as e:
        sandbox.run(_raise, timeout=10)
    assert (e.value.code, e.value.message) == ("encrypted", "password required")
    with pytest.raises(ExtractionError) as e:
        sandbox.run(_bug, timeout=10, label="md")
    assert e.value.code == "extractor-crash" and "KeyError" in e.value.message


def _pid():
    import os

    return os.getpid()


def test_sandbox_process_is_reused_and_replaced_after_a_failure(monkeypatch):
    import os

    a, b = sandbox.run(_pid, timeout=10), sandbox.run(_pid, timeout=10)
    assert a == b != os.getpid()  # one sandbox process serves many parses
    with pytest.raises(ExtractionError):
        sandbox.run(_segfault, timeout=10)
    c = sandbox.run(_pid, timeout=10)
    assert c != a  # a crash costs that process; a fresh one takes over
    monkeypatch.setattr(sandbox, "MAX_TASKS_PER_SANDBOX", 1)
    assert sandbox.run(_pid, timeout=10) != sandbox.run(_pid, timeout=10)  # recycled
