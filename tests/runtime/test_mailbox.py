"""The server's mailbox: read a whole instant's mail, put back what was not used."""

from __future__ import annotations

import asyncio

from fedactors.runtime.loop import run
from fedactors.runtime.mailbox import Mailbox


def test_take_all_then_put_back_keeps_the_order_for_the_next_reader() -> None:
    async def main() -> list:
        box = Mailbox()
        for m in range(6):
            box.put_nowait(m)
        first = await box.get()
        rest = box.take_all()
        assert (first, rest, box.qsize()) == (0, [1, 2, 3, 4, 5], 0)
        box.put_nowait(6)  # arrived while the reader worked
        box.put_back(rest[2:])  # it used 1 and 2
        return [box.get_nowait() for _ in range(box.qsize())]

    assert run(main()) == [3, 4, 5, 6]


def test_a_reader_waiting_on_an_empty_mailbox_is_woken() -> None:
    async def main() -> list:
        box = Mailbox()
        loop = asyncio.get_running_loop()
        loop.call_later(2.0, box.put_nowait, "late")
        got = await box.get()
        return [got, loop.time(), box.take_all()]

    assert run(main()) == ["late", 2.0, []]
