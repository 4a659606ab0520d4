from __future__ import annotations

from fedactors.reporting.timeline import sample_devices, timeline_figure, timeline_from_events


def ev(t: float, actor: str, event: str, **fields) -> dict:
    return {"t": t, "actor": actor, "event": event, **fields}


# Round 1 closes at its deadline (t=10); round 2 closes early on target (t=12).
EVENTS = [
    ev(0, "server", "round.start", round=1, deadline=10.0, cohort=[1, 2, 3, 4]),
    ev(1, "device-1", "request.received", round=1, compute_s=2.0),
    ev(1, "device-2", "request.received", round=1, compute_s=9.0),
    ev(1, "device-4", "request.received", round=1, compute_s=20.0),
    ev(2, "device-3", "request.received", round=1, compute_s=7.0),
    ev(3, "device-1", "update.sent", round=1, upload_s=1.0),  # in time, arrives at 4
    ev(5, "device-2", "dropped", round=1),
    ev(9, "device-3", "update.sent", round=1, upload_s=3.0),  # upload cut at 10
    ev(10, "server", "round.end", round=1, closed_by="deadline"),
    ev(10, "server", "round.start", round=2, deadline=20.0, cohort=[1, 4]),
    ev(10.5, "device-1", "request.received", round=2, compute_s=0.5),
    ev(11, "device-1", "update.sent", round=2, upload_s=0.5),
    ev(12, "server", "round.end", round=2, closed_by="target"),
    ev(21, "device-4", "update.sent", round=1, upload_s=1.0),  # trained past the deadline
    ev(22, "device-4", "request.received", round=2, compute_s=1.0),  # was busy
    ev(23, "device-4", "update.sent", round=2, upload_s=1.0),
]


def test_segment_counts_of_handcrafted_log() -> None:
    timeline = timeline_from_events(EVENTS)
    assert timeline.devices == [1, 2, 3, 4]
    counts = {k: timeline.count(k) for k in
              ("download", "train", "upload", "dropped", "late", "surplus")}
    assert counts == {"download": 5, "train": 4, "upload": 3, "dropped": 1, "late": 3,
                      "surplus": 2}
    assert timeline.drops == [(2, 5.0)]
    assert sorted(timeline.arrivals) == [(1, 4.0), (1, 11.5)]
    late = sorted((s.device, s.start, s.end) for s in timeline.segments if s.kind == "late")
    assert late == [(3, 10.0, 12.0), (4, 10.0, 21.0), (4, 21.0, 22.0)]
    # Device 4's second request waited in its mailbox: no download bar before t=22.
    assert not [s for s in timeline.segments
                if s.device == 4 and s.round == 2 and s.kind == "download"]
    assert timeline_figure(timeline, "handmade") is not None


def test_round_window_and_sample() -> None:
    timeline = timeline_from_events(EVENTS, sample=2, max_rounds=1)
    assert [w.round for w in timeline.rounds] == [1]
    assert timeline.total_rounds == 2
    assert timeline.devices == sample_devices([1, 2, 3, 4], 2) == [2, 4]
    assert all(s.round == 1 for s in timeline.segments)


def test_sample_is_deterministic_and_spread() -> None:
    picked = sample_devices(range(1000), 10)
    assert picked == sample_devices(reversed(range(1000)), 10)
    assert len(picked) == 10 and picked[0] < 100 and picked[-1] >= 900


def test_server_only_log_has_no_figure() -> None:
    server_only = [e for e in EVENTS if e["actor"] == "server"]
    timeline = timeline_from_events(server_only)
    assert not timeline.has_device_events and timeline_figure(timeline) is None
