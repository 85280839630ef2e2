"""Per-document time bounds inside a Celery task (issue 15).

A task has a soft time limit (``INGEST_TASK_TIME_LIMIT`` - 30 s). The pipeline works
against a :class:`Budget` a little shorter than that, checked between bounded steps
(one parse, one piece of embedding), so the limit stops work at a step boundary:

* a group task (``ingest.changes``) that runs short hands the documents it has not
  finished back to the queue, one task each: a neighbour's time never costs a
  document anything;
* a document that runs short while embedding, having made progress, goes back to the
  queue as it is and resumes from the embedding cache (pieces of ``INGEST_EMBED_PIECE``
  chunks are cached as they are computed): a document of any size gets there;
* a document that makes no progress in a task of its own is quarantined with the
  reason ``timeout after N s in <stage>``.
"""
from __future__ import annotations

import time

from ingest.config import settings

def soft_limit_s() -> float:
    return settings().soft_time_limit


def task_budget_s(soft: float | None = None) -> float:
    """What the pipeline plans with: the soft limit less a margin to record the outcome."""
    soft = soft_limit_s() if soft is None else soft
    return max(1.0, soft - min(30.0, 0.2 * soft))


class Budget:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


class OutOfTime(Exception):
    """The budget ran out at a step boundary. ``progress``: some of the document's work
    was kept (cached vectors) in this task, so doing it again goes further."""

    def __init__(self, stage: str, progress: bool, seconds: float):
        super().__init__(f"timeout after {seconds:.0f} s in {stage}")
        self.stage, self.progress, self.seconds = stage, progress, seconds


class Requeue(Exception):
    """Raised to the task: queue ``events`` (change events, their ``seq`` kept) again, one task
    each; ``outs``: the outcomes of what was done."""

    def __init__(self, events: list, *, outs: list | None = None):
        super().__init__(f"{len(events)} change(s) to queue again")
        self.events, self.outs = events, outs or []


def is_soft_timeout(exc: BaseException) -> bool:
    """Celery's (billiard's) SoftTimeLimitExceeded, without importing it."""
    return type(exc).__name__ == "SoftTimeLimitExceeded"
