"""The server's mailbox: a FIFO that can hand over everything queued at once.

A round's updates arrive together (every device of a cohort that trains at one
speed reports at one instant), and checking their contents one by one costs a
NumPy call per key per update. The server reads what is queued *now* in one
go, checks it together, and puts back, at the front and in order, what it did
not get to (the round closed part-way), so the next reader sees exactly the
mail it would have seen reading one message at a time.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from typing import Any


class Mailbox(asyncio.Queue):
    """An unbounded ``asyncio.Queue`` with :meth:`take_all` and :meth:`put_back`."""

    def _init(self, maxsize: int) -> None:
        # The storage hook asyncio.Queue's subclasses override (as PriorityQueue
        # does); owning it is what lets messages go back to the front.
        self._queue: deque[Any] = deque()

    def take_all(self) -> list[Any]:
        """Every message queued now, oldest first; the mailbox is then empty."""
        items = list(self._queue)
        self._queue.clear()
        return items

    def put_back(self, messages: Sequence[Any]) -> None:
        """Return ``messages`` (read but not used) to the front, in their order."""
        self._queue.extendleft(reversed(messages))
