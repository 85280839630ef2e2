"""Running an external parsing tool (tesseract, LibreOffice) with a timeout.

The tool stays in the caller's process group, so the parse sandbox's group kill
reaches it too; on our own timeout ``kill`` ends it (and whatever it started).
"""
from __future__ import annotations

import subprocess
from typing import Callable

from .base import ExtractionError
from .errors import ErrorCode


def run_tool(cmd: list[str], *, env: dict, timeout: float, missing_hint: str, label: str,
             kill: Callable[[subprocess.Popen], None], cwd: str | None = None) -> tuple[bytes, bytes, int]:
    """Run ``cmd``; returns (stdout, stderr, returncode). Missing binary -> ``missing-tool``,
    past ``timeout`` -> ``timeout after N s in <label>``."""
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, env=env, cwd=cwd)
    except OSError as exc:
        raise ExtractionError(ErrorCode.MISSING_TOOL, f"{missing_hint} ({exc})") from exc
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(proc)
        raise ExtractionError(ErrorCode.TIMEOUT, f"timeout after {timeout:g} s in {label}") from None
    except BaseException:
        kill(proc)
        raise
    return out, err, proc.returncode
