"""The virtual clock: jumps, orders ties, costs no wall time, detects stalls."""

from __future__ import annotations

import asyncio
import time

import pytest

from fedactors.errors import SimulationStalled
from fedactors.runtime.loop import DELIVERY, TIMEOUT, VirtualTimeLoop, run


@pytest.mark.asyncio
async def test_pytest_asyncio_runs_on_the_virtual_clock() -> None:
    assert isinstance(asyncio.get_running_loop(), VirtualTimeLoop)


@pytest.mark.asyncio
async def test_an_hour_long_sleep_jumps_the_clock_and_costs_no_wall_time(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # "No wall time" is checked by what the loop does, not by a stopwatch (which flakes on a
    # loaded machine; benchmarks/loop.py measures it): the hour passes in one jump of the
    # clock, within a handful of scheduler passes, and nothing ever waits for real.
    loop = asyncio.get_running_loop()
    passes: list[float] = []  # the clock at the start of every scheduler pass
    run_once = loop._run_once

    def counted() -> None:
        passes.append(loop.time())
        run_once()

    def no_real_waiting(*args, **kwargs):
        raise AssertionError("the virtual-time loop waited for real")

    monkeypatch.setattr(loop, "_run_once", counted)
    monkeypatch.setattr(time, "sleep", no_real_waiting)
    if hasattr(loop, "_selector"):  # pragma: no cover - the loop does no I/O
        monkeypatch.setattr(loop._selector, "select", no_real_waiting)
    start = loop.time()
    await asyncio.sleep(3600.0)
    assert loop.time() - start == 3600.0
    # One pass that jumps the clock and wakes the sleeper; no pass at any time in between.
    assert len(passes) <= 3 and set(passes) <= {start, start + 3600.0}, passes


@pytest.mark.asyncio
async def test_timeouts_fire_at_exactly_their_simulated_instant() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.Event().wait(), timeout=12.5)
    assert loop.time() - start == 12.5


@pytest.mark.asyncio
async def test_same_instant_timers_run_by_priority_then_scheduling_order() -> None:
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    loop.call_at(5.0, seen.append, "timeout", priority=TIMEOUT)
    loop.call_at(5.0, seen.append, "first delivery", priority=DELIVERY)
    loop.call_at(5.0, seen.append, "second delivery", priority=DELIVERY)
    loop.call_at(4.0, seen.append, "earlier", priority=TIMEOUT)
    await asyncio.sleep(10.0)
    assert seen == ["earlier", "first delivery", "second delivery", "timeout"]


@pytest.mark.asyncio
async def test_concurrent_sleepers_wake_in_time_order() -> None:
    loop = asyncio.get_running_loop()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        woke.append((name, loop.time()))

    await asyncio.gather(sleeper("c", 3.0), sleeper("a", 1.0), sleeper("b", 2.0))
    assert woke == [("a", 1.0), ("b", 2.0), ("c", 3.0)]


def test_waiting_with_no_timer_pending_is_reported_as_a_stall() -> None:
    async def wait_forever() -> None:
        await asyncio.Event().wait()

    with pytest.raises(SimulationStalled, match="every actor waits"):
        run(wait_forever())


def test_timers_never_fire_in_the_past() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(10.0)
        fired = loop.create_future()
        loop.call_at(3.0, lambda: fired.set_result(loop.time()))
        return await fired

    assert run(main()) == 10.0


@pytest.mark.asyncio
async def test_many_timers_fire_in_time_priority_sequence_order() -> None:
    # The heap holds (when, priority, sequence, timer) tuples: check the full
    # rule on a shuffled mix of ties, including timers cancelled before firing.
    import random

    loop = asyncio.get_running_loop()
    start = loop.time()
    shuffle = random.Random(3)
    fired: list[tuple[float, int, int]] = []
    expected: list[tuple[float, int, int]] = []
    for seq in range(300):
        when = start + shuffle.choice([1.0, 2.0, 2.5])
        priority = shuffle.choice([DELIVERY, TIMEOUT])
        key = (when, priority, seq)
        handle = loop.call_at(when, lambda k=key: fired.append(k), priority=priority)
        if seq % 7 == 0:
            handle.cancel()
        else:
            expected.append(key)
    await asyncio.sleep(5.0)
    assert fired == sorted(expected)


@pytest.mark.asyncio
async def test_timer_handles_behave_like_asyncio_timer_handles() -> None:
    loop = asyncio.get_running_loop()
    handle = loop.call_later(2.0, lambda: None)
    assert isinstance(handle, asyncio.TimerHandle)
    assert handle.when() == loop.time() + 2.0
    assert not handle.cancelled()
    handle.cancel()
    assert handle.cancelled()
    assert "when=" in repr(handle)
    await asyncio.sleep(3.0)  # the cancelled timer is skipped, not run


@pytest.mark.asyncio
async def test_a_timer_runs_in_the_context_it_was_scheduled_in() -> None:
    import contextvars

    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    var.set("scheduler")
    loop.call_later(1.0, lambda: seen.append(var.get()))
    var.set("changed later")
    await asyncio.sleep(2.0)
    assert seen == ["scheduler"]


def test_the_heap_is_frozen_only_while_the_loop_runs() -> None:
    import gc

    async def main() -> int:
        await asyncio.sleep(1.0)
        return gc.get_freeze_count()

    assert gc.get_freeze_count() == 0
    assert run(main()) > 0  # long-lived objects are out of the collector's view
    assert gc.get_freeze_count() == 0  # and handed back afterwards


def test_call_when_idle_runs_once_at_the_end_of_the_instant() -> None:
    # "End of the instant": after everything at t=5 (including what it schedules for
    # t=5 itself, with a timer or call_soon), before the clock moves to t=7.
    seen: list[tuple[str, float]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def at_five() -> None:
            seen.append(("timer", loop.time()))
            loop.call_when_idle(lambda: seen.append(("idle", loop.time())))
            loop.call_soon(lambda: seen.append(("soon", loop.time())))
            loop.call_later(0.0, lambda: seen.append(("zero-delay", loop.time())),
                            priority=TIMEOUT)

        loop.call_later(5.0, at_five)
        loop.call_later(7.0, lambda: seen.append(("later", loop.time())))
        await asyncio.sleep(10.0)

    run(main())
    assert seen == [("timer", 5.0), ("soon", 5.0), ("zero-delay", 5.0), ("idle", 5.0),
                    ("later", 7.0)]


def test_pending_timers_come_in_the_order_they_will_run() -> None:
    loop = VirtualTimeLoop()
    try:
        late = loop.call_at(2.0, print)
        tie_timeout = loop.call_at(1.0, print, priority=TIMEOUT)
        tie_delivery = loop.call_at(1.0, print, priority=DELIVERY)
        first_scheduled_tie = loop.call_at(1.0, print, priority=DELIVERY)  # noqa: F841
        cancelled = loop.call_at(0.5, print)
        cancelled.cancel()
        order = loop.pending_timers()
        assert order == [tie_delivery, first_scheduled_tie, tie_timeout, late]
        assert [t.priority for t in order] == [DELIVERY, DELIVERY, TIMEOUT, 0]
    finally:
        loop.close()


def test_an_idle_callback_that_wakes_an_actor_keeps_the_clock_at_that_instant() -> None:
    # A FedBuff stop is mail put at the end of an instant: it must be read at that instant,
    # not after the clock jumped to the next timer.
    async def main() -> float:
        loop = asyncio.get_running_loop()
        mailbox: asyncio.Queue = asyncio.Queue()
        loop.call_later(5.0, lambda: loop.call_when_idle(lambda: mailbox.put_nowait("stop")))
        loop.call_later(60.0, mailbox.put_nowait, "too late")
        assert await mailbox.get() == "stop"
        return loop.time()

    assert run(main()) == 5.0


def test_objects_the_process_froze_itself_stay_frozen_after_a_run() -> None:
    # The loop freezes the heap only when nothing is frozen yet, because unfreezing at the
    # end would also release what the process had frozen for its own reasons.
    import gc

    async def main() -> None:
        await asyncio.sleep(1.0)

    gc.freeze()
    try:
        assert gc.get_freeze_count() > 0
        run(main())
        # Still frozen (the count itself may drop as frozen objects are freed meanwhile).
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
