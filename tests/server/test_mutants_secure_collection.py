"""Pieces of the secure collection phase that need no protocol run."""

from __future__ import annotations

import time

import pytest

from fedactors.server.secure_collection import _Tally


def test_the_tally_adds_up_the_server_time_of_every_timed_step() -> None:
    tally = _Tally()
    assert tally.timed(lambda a, b: (time.sleep(0.02), a + b)[1], 2, 3) == 5
    tally.timed(time.sleep, 0.02)
    assert 0.04 <= tally.seconds < 1.0
    with pytest.raises(ZeroDivisionError):
        tally.timed(lambda: 1 / 0)  # a failing step's time still counts
    assert 0.04 <= tally.seconds < 1.0
