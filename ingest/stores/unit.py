"""A container and its child documents land together (both stores).

A mail's attachments and an archive's members are indexed before their parent is done
(the parent's own chunks are embedded after them, perhaps in a group with other
documents). Their writes must not become visible on their own: if the parent then fails,
times out or is re-queued, the store would hold children without their parent.

* ``with store.hold() as held:`` - the writes marked ``@held_write`` (``apply``,
  ``record_failure``, ``set_acl``, ``delete``) made inside are not done but kept, in order,
  in ``held``.
* ``with store.unit(held): store.apply(parent, chunks)`` - one transaction: the held writes,
  then the parent's own write; all of it lands or none of it. Inside an outer ``hold`` (a
  zip attached to a mail) the whole unit is kept for the outer one instead.

Nothing held is ever written if the unit is never entered (an exception, a time-out, a
re-queue): the store keeps the previous state of the parent and all its children.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager


def held_write(fn):
    """A store write that ``hold()`` keeps for the unit instead of doing it now."""
    @functools.wraps(fn)
    def write(self, *args, **kwargs):
        stack = getattr(self._local, "held", None)
        if stack:
            stack[-1].append((fn, args, kwargs))
            return None
        return fn(self, *args, **kwargs)
    return write


class UnitMixin:
    """Needs ``self._local`` (a ``threading.local``) and a ``tx()`` that nests."""

    @contextmanager
    def hold(self):
        stack = self._local.__dict__.setdefault("held", [])
        ops: list = []
        stack.append(ops)
        try:
            yield ops
        finally:
            stack.pop()

    @contextmanager
    def unit(self, held: list | None):
        stack = getattr(self._local, "held", None)
        if not held and not stack:  # nothing held: the write inside is its own transaction
            yield
            return
        if stack:  # a container inside a container: the outer unit takes all of it
            stack[-1].extend(held or ())
            yield
            return
        with self.tx():
            for fn, args, kwargs in held or ():
                fn(self, *args, **kwargs)
            yield
