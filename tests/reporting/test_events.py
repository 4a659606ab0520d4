"""events.jsonl is strict JSON: a non-finite number is written as null, at any depth.

A new-user trial found ``"train_loss":NaN`` in the log of a device whose data held a NaN:
Python reads it, but jq, JavaScript and most JSON tools refuse the line.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from fedactors.reporting.events import EventLog
from fedactors.reporting.timeline import timeline_from_file


def strict_loads(line: str):
    """json.loads that refuses NaN / Infinity / -Infinity, as RFC 8259 parsers do."""
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(line, parse_constant=refuse)


def logged(**fields) -> tuple[dict, dict]:
    """(what the file says, what the in-memory record holds) for one emitted event."""
    stream = io.StringIO()
    log = EventLog(lambda: 1.5, stream, keep=True)
    log.emit("device-3", "update.sent", **fields)
    (line,) = stream.getvalue().splitlines()
    return strict_loads(line), log.records[0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -math.inf, np.float32("nan"),
                                 np.float64("-inf")])
def test_a_non_finite_field_is_written_as_null(bad) -> None:
    got, record = logged(round=2, train_loss=bad, upload_s=0.25)
    assert got == {"t": 1.5, "actor": "device-3", "event": "update.sent", "round": 2,
                   "train_loss": None, "upload_s": 0.25}
    # In memory the value stays what was emitted (a float that is not finite).
    assert not math.isfinite(record["train_loss"])


def test_non_finite_numbers_inside_lists_and_dicts_are_null_too() -> None:
    got, _ = logged(losses=np.array([0.5, np.nan, np.inf], np.float32),
                    nested={"a": [1.0, float("-inf")], "b": (2, float("nan"))})
    assert got["losses"] == [0.5, None, None]
    assert got["nested"] == {"a": [1.0, None], "b": [2, None]}


def test_a_finite_event_is_written_as_before() -> None:
    """The common line is unchanged, byte for byte (logs of earlier runs still compare)."""
    stream = io.StringIO()
    EventLog(lambda: 0.1 + 0.2, stream).emit("server", "round.start", round=1, deadline=20.0,
                                             cohort=np.array([3, 1]), ok=True, why=None)
    assert stream.getvalue() == ('{"t":0.3,"actor":"server","event":"round.start","round":1,'
                                 '"deadline":20.0,"cohort":[3,1],"ok":true,"why":null}\n')


def test_the_timeline_reads_a_log_with_a_null_loss(tmp_path) -> None:
    path = tmp_path / "events.jsonl"
    with open(path, "w") as stream:
        log = EventLog(lambda: clock[0], stream)
        clock = [0.0]
        log.emit("server", "round.start", round=1, deadline=10.0, cohort=[1])
        clock[0] = 1.0
        log.emit("device-1", "request.received", round=1, compute_s=2.0)
        clock[0] = 3.0
        log.emit("device-1", "update.sent", round=1, upload_s=1.0, train_loss=float("nan"))
        clock[0] = 4.0
        log.emit("server", "round.end", round=1, closed_by="target")
    for line in path.read_text().splitlines():
        strict_loads(line)
    timeline = timeline_from_file(path)
    assert timeline.devices == [1] and timeline.arrivals == [(1, 4.0)]
