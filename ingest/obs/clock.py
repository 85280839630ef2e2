"""Per-document stage timings (seconds): fetch, extract, quality, chunk, embed, store."""
from __future__ import annotations

import time
from contextlib import contextmanager

STAGES = ("queue", "fetch", "extract", "quality", "chunk", "embed", "store")


class Clock:
    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self._lap = time.perf_counter()
        self.current: str | None = None  # the stage running now (a timeout names it)

    def add(self, name: str, seconds: float) -> None:
        self.stages[name] = self.stages.get(name, 0.0) + seconds

    @contextmanager
    def stage(self, name: str):
        t0, outer = time.perf_counter(), self.current
        self.current = name
        try:
            yield
        finally:
            self.current = outer
            self.add(name, time.perf_counter() - t0)
            self._lap = time.perf_counter()

    def lap(self, name: str | None) -> None:
        """Charge the time since the last stage or lap to ``name`` (None: to nothing)."""
        now = time.perf_counter()
        if name is not None:
            self.add(name, now - self._lap)
        self._lap = now


def merged(*parts: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for p in parts:
        for k, v in p.items():
            out[k] = out.get(k, 0.0) + v
    return out
