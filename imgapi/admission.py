"""Admission control: how many inferences run at once, and how many requests may wait for one.

A burst beyond what the slots and the queue hold gets a quick 503 ``busy`` (with ``Retry-After``) instead
of piling up, which leaves the server's threads free for cheap requests (``/health``, errors).
"""
import threading

from imgapi.errors import unavailable

RETRY_AFTER_S = 2


class Admission:
    """At most ``slots`` calls of :meth:`run` at once; at most ``max_queue`` more wait for a slot, each at
    most ``timeout_s`` seconds. Any other call is refused with 503 ``busy`` and ``Retry-After``."""

    def __init__(self, slots, max_queue, timeout_s):
        self.slots, self.max_queue, self.timeout_s = slots, max_queue, timeout_s
        self._free = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._waiting = 0

    @property
    def waiting(self):
        """How many calls are waiting for a slot now."""
        return self._waiting

    def run(self, fn):
        """``fn()`` in a slot; its result or its exception. The slot is released either way."""
        self._acquire()
        try:
            return fn()
        finally:
            self._free.release()

    def _acquire(self):
        if self._free.acquire(blocking=False):
            return
        with self._lock:
            full = self._waiting >= self.max_queue
            if not full:
                self._waiting += 1
        if full:
            raise unavailable("busy", f"all {self.slots} inference slots are busy and "
                                      f"{self.max_queue} requests are already waiting.", retry_after=RETRY_AFTER_S)
        try:
            got = self._free.acquire(timeout=self.timeout_s)
        finally:
            with self._lock:
                self._waiting -= 1
        if not got:
            raise unavailable("busy", f"all {self.slots} inference slots stayed busy for "
                                      f"{self.timeout_s:g} s.", retry_after=RETRY_AFTER_S)
