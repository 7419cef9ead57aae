"""Admission control on its own (imgapi/admission.py): slots, the queue limit, the wait timeout, and slots
released whatever the work does. The same behaviour over HTTP, under a real burst, is tests/test_load.py."""
import threading

import pytest

from imgapi.admission import Admission
from imgapi.errors import ApiError

JOIN_S = 30  # generous: only a hang fails, never a slow machine


class Held:
    """Work that takes a slot and keeps it until released; ``entered`` is set once it holds the slot."""

    def __init__(self, admission):
        self.entered, self.go = threading.Event(), threading.Event()
        self.result, self.error = None, None
        self.thread = threading.Thread(target=self._call, args=(admission,), daemon=True)

    def _call(self, admission):
        try:
            self.result = admission.run(self._work)
        except ApiError as exc:
            self.error = exc

    def _work(self):
        self.entered.set()
        assert self.go.wait(JOIN_S)
        return "done"

    def start(self):
        self.thread.start()
        return self

    def finish(self):
        self.go.set()
        self.thread.join(JOIN_S)
        assert not self.thread.is_alive()
        return self


def wait_for(predicate):
    for _ in range(JOIN_S * 100):
        if predicate():
            return
        threading.Event().wait(0.01)
    raise AssertionError("condition not reached")


def assert_busy(exc_info, words):
    err = exc_info.value
    assert (err.status, err.code, err.headers) == (503, "busy", {"Retry-After": "2"})
    assert words in err.message and err.message.endswith("retry in 2 s.")


def test_runs_the_work_and_returns_its_result():
    assert Admission(1, 0, 1).run(lambda: 42) == 42


def test_as_many_run_at_once_as_there_are_slots():
    admission = Admission(slots=2, max_queue=0, timeout_s=JOIN_S)
    first, second = Held(admission).start(), Held(admission).start()
    assert first.entered.wait(JOIN_S) and second.entered.wait(JOIN_S)  # both inside at once
    with pytest.raises(ApiError) as exc_info:  # a third: no slot, no room in the queue
        admission.run(lambda: pytest.fail("ran without a slot"))
    assert_busy(exc_info, "all 2 inference slots are busy and 0 requests are already waiting.")
    first.finish(), second.finish()
    assert (first.result, second.result) == ("done", "done")


def test_beyond_the_queue_limit_the_answer_is_immediate():
    admission = Admission(slots=1, max_queue=1, timeout_s=JOIN_S)
    holder = Held(admission).start()
    assert holder.entered.wait(JOIN_S)
    waiter = Held(admission).start()
    wait_for(lambda: admission.waiting == 1)
    # The queue is full: refused at once, although a waiter would wait up to JOIN_S for a slot.
    with pytest.raises(ApiError) as exc_info:
        admission.run(lambda: pytest.fail("ran without a slot"))
    assert_busy(exc_info, "all 1 inference slots are busy and 1 requests are already waiting.")
    assert admission.waiting == 1
    holder.finish()
    assert waiter.entered.wait(JOIN_S)  # the waiter got the freed slot
    waiter.finish()
    assert (holder.result, waiter.result, waiter.error) == ("done", "done", None)
    assert admission.waiting == 0


def test_a_waiter_gives_up_after_the_timeout_and_leaves_the_queue():
    admission = Admission(slots=1, max_queue=1, timeout_s=0.05)
    holder = Held(admission).start()
    assert holder.entered.wait(JOIN_S)
    with pytest.raises(ApiError) as exc_info:
        admission.run(lambda: pytest.fail("ran without a slot"))
    assert_busy(exc_info, "all 1 inference slots stayed busy for 0.05 s.")
    assert admission.waiting == 0  # its place in the queue is free again: the next one waits, not refused
    with pytest.raises(ApiError) as exc_info:
        admission.run(lambda: pytest.fail("ran without a slot"))
    assert_busy(exc_info, "stayed busy for 0.05 s.")
    holder.finish()
    assert admission.run(lambda: "next") == "next"


def test_the_slot_is_released_when_the_work_fails():
    admission = Admission(slots=1, max_queue=0, timeout_s=0)

    def boom():
        raise ValueError("the work failed")

    def refuse():
        raise ApiError(415, "invalid_image", "not an image")

    for _ in range(3):  # with the slot leaked, the second call would be refused as busy
        with pytest.raises(ValueError, match="the work failed"):
            admission.run(boom)
    with pytest.raises(ApiError) as exc_info:  # an ApiError from the work passes through as it is
        admission.run(refuse)
    assert exc_info.value.code == "invalid_image"
    assert admission.run(lambda: "free") == "free"
    assert admission.waiting == 0
