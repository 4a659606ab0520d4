"""Alarms: wake-ups due at one instant share a timer, and ring exactly where their own
timers would have (order against every other timer included), cancel when the last
waiter leaves, and survive a checkpoint."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fedactors.devices.actor import DeviceDirectory, DeviceSnapshot, Dropping
from fedactors.runtime.alarms import AlarmClock, WakeUps
from fedactors.runtime.loop import TIMEOUT, VirtualTimeLoop


class _Recorded(asyncio.Future):
    """A future that records when it is resolved, at once (a done callback would
    only run at the loop's next step, after every timer of the instant)."""

    def __init__(self, loop: VirtualTimeLoop, rung: list, name: str) -> None:
        super().__init__(loop=loop)
        self._rung, self._name = rung, name

    def set_result(self, result) -> None:
        self._rung.append((self._name, self.get_loop().time()))
        super().set_result(result)


def _future(loop: VirtualTimeLoop, rung: list, name: str) -> asyncio.Future:
    return _Recorded(loop, rung, name)


@pytest.fixture
def loop():
    loop = VirtualTimeLoop()
    yield loop
    loop.close()


def _ring(loop: VirtualTimeLoop, seconds: float = 100.0) -> None:
    loop.run_until_complete(asyncio.sleep(seconds))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from([1.0, 2.0]), st.sampled_from([0, TIMEOUT])),
                min_size=1, max_size=12))
# Two wake-ups at one instant and different priorities, then a timer between them.
@example([(True, 1.0, 0), (True, 1.0, TIMEOUT), (False, 1.0, 0)])
def test_alarms_ring_in_the_order_separate_timers_would(plan) -> None:
    """Each step sets either a wake-up on the clock or a plain timer, at one of two
    instants and priorities: the rings come in the order one timer each would give."""

    def ring_order(shared: bool) -> list:
        loop = VirtualTimeLoop()
        rung: list = []
        clock = AlarmClock()
        try:
            for i, (wake, when, priority) in enumerate(plan):
                if wake and shared:
                    clock.wake_at(loop, when, i, _future(loop, rung, f"w{i}"), priority)
                elif wake:  # what a device did before alarms: a timer of its own
                    future = _future(loop, rung, f"w{i}")
                    loop.call_at(when, future.set_result, None, priority=priority)
                else:
                    loop.call_at(when, rung.append, (f"t{i}", when), priority=priority)
            _ring(loop)
        finally:
            loop.close()
        return rung

    assert ring_order(shared=True) == ring_order(shared=False)


def test_wake_ups_set_together_share_one_timer_and_others_get_their_own(loop: VirtualTimeLoop) -> None:
    clock = AlarmClock()
    futures = [loop.create_future() for _ in range(5)]
    a = clock.wake_at(loop, 1.0, 0, futures[0])
    assert clock.wake_at(loop, 1.0, 1, futures[1]) is a
    assert clock.wake_at(loop, 2.0, 2, futures[2]) is not a  # another instant
    b = clock.wake_at(loop, 2.0, 3, futures[3])
    loop.call_at(2.0, lambda: None)  # a timer in between: the next cannot join
    assert clock.wake_at(loop, 2.0, 4, futures[4]) is not b
    assert len(loop.pending_timers()) == 4
    assert a.saved() == WakeUps((0, 1))


def test_the_last_waiter_to_leave_cancels_the_timer_and_the_clock_does_not_stop_there(
        loop: VirtualTimeLoop) -> None:
    clock, rung = AlarmClock(), []
    alarm = clock.wake_at(loop, 5.0, "a", _future(loop, rung, "a"))
    clock.wake_at(loop, 5.0, "b", _future(loop, rung, "b"))
    alarm.leave("a")
    assert alarm.pending and not alarm.handle.cancelled()
    alarm.leave("b")
    assert not alarm.pending and alarm.handle.cancelled()
    assert loop.pending_timers() == []
    # A cancelled alarm takes no one else: a later wake-up at that instant rings.
    clock.wake_at(loop, 5.0, "c", _future(loop, rung, "c"))
    _ring(loop, 10.0)
    assert rung == [("c", 5.0)]


def test_a_stopped_waiter_is_skipped_and_the_rest_still_ring(loop: VirtualTimeLoop) -> None:
    clock, rung = AlarmClock(), []
    futures = {k: _future(loop, rung, k) for k in "abc"}
    for k, f in futures.items():
        clock.wake_at(loop, 1.0, k, f)
    futures["b"].cancel()
    _ring(loop)
    assert rung == [("a", 1.0), ("c", 1.0)]


@pytest.mark.parametrize("saved", [WakeUps((4, 2)), 4], ids=["wake-ups", "one-device (older checkpoints)"])
def test_restored_devices_wait_on_alarms_their_checkpoint_named(saved) -> None:
    loop = VirtualTimeLoop()
    try:
        # Devices going silent: the restore needs no executor, data nor model.
        directory = DeviceDirectory(world=SimpleNamespace(executor=None), on_failure=None)
        devices = saved.keys if isinstance(saved, WakeUps) else (saved,)
        directory.restore(loop, [DeviceSnapshot(d, Dropping(3), None, None, ()) for d in devices])
        directory.restore_timer(saved, 7.0, 0)
        timers = directory.pending_timers()
        assert len(timers) == 1 and len(loop.pending_timers()) == 1
        handle, what = timers[0]
        assert handle.when() == 7.0 and what == WakeUps(tuple(devices))
    finally:
        loop.close()
