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


def test_a_cut_device_reselected_at_once_is_drawn_as_the_log_says(tmp_path) -> None:
    """Two slow devices miss every deadline and are selected again at once: their cut
    bars end where their next round's work begins, and each round's training starts
    when the log says its request arrived."""
    import json

    import keras
    import numpy as np

    from fedactors import DeviceClass, FederatedData, LocalTraining, Rounds, Scenario
    from fedactors.reporting.timeline import timeline_from_file
    from fedactors.simulation import RunOptions, run_scenario

    def data(fleet, rng):
        def pair(n):
            x = rng.normal(size=(n, 3)).astype(np.float32)
            return x, (x[:, 0] > 0).astype(np.int32)
        return FederatedData.from_arrays([pair(20) for _ in range(fleet.size)], pair(30))

    scenario = Scenario(
        name="cut", model=lambda: keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), data=data,
        fleet=[DeviceClass("fast", count=4, compute=20.0),  # 1 s per epoch
               DeviceClass("slow", count=2, compute=1.0)],  # 20 s: past every deadline
        rounds=Rounds(count=4, cohort_size=6, deadline=5.0, min_reports=1),
        training=LocalTraining(batch_size=10, optimizer=lambda: keras.optimizers.SGD(0.1)))
    out = tmp_path / "run"
    run_scenario(scenario, RunOptions(out_dir=out))
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    received = {(int(e["actor"][7:]), e["round"]): e["t"] for e in events
                if e["event"] == "request.received"}
    cut = {(int(e["actor"][7:]), e["round"]) for e in events if e["event"] == "cut"}
    assert {(4, r) for r in range(1, 4)} <= cut  # the slow ones are cut, round after round

    timeline = timeline_from_file(out / "events.jsonl", sample=6, max_rounds=None)
    for device in timeline.devices:
        bars = sorted((s for s in timeline.segments if s.device == device),
                      key=lambda s: (s.start, s.end))
        for a, b in zip(bars, bars[1:]):
            assert a.end <= b.start + 1e-9, (device, a, b)  # no bar over another
        for (d, r), t in received.items():
            if d == device:
                (train,) = [s for s in bars if s.round == r and s.kind in ("train", "dropped")]
                assert train.start == t
    # Re-selected at the very instant of the cut: no room for a cut bar, but the cut is
    # marked, and the training bar ends there.
    cut_at = {(e_d, e_r): e["t"] for e in events if e["event"] == "cut"
              for e_d, e_r in [(int(e["actor"][7:]), e["round"])]}
    assert sorted(timeline.cuts) == sorted((d, t) for (d, _), t in cut_at.items())
    for (d, r), t in cut_at.items():
        (train,) = [s for s in timeline.segments if (s.device, s.round, s.kind) == (d, r, "train")]
        assert train.end == t


def test_a_cut_bar_ends_where_the_devices_next_round_begins() -> None:
    """The device is cut at t=10 with 20 s of training left; the server selects it again
    at t=12: its cut bar runs 10 -> 12, then round 2's download and training."""
    log = [
        ev(0, "server", "round.start", round=1, deadline=10.0, cohort=[7]),
        ev(1, "device-7", "request.received", round=1, compute_s=29.0),
        ev(10, "device-7", "cut", round=1),
        ev(10, "server", "round.end", round=1, closed_by="deadline"),
        ev(12, "server", "round.start", round=2, deadline=40.0, cohort=[7]),
        ev(12.5, "device-7", "request.received", round=2, compute_s=3.0),
        ev(15.5, "device-7", "update.sent", round=2, upload_s=0.5),
        ev(16, "server", "round.end", round=2, closed_by="target"),
    ]
    timeline = timeline_from_events(log)
    bars = sorted((s.kind, s.round, s.start, s.end) for s in timeline.segments)
    assert bars == [("download", 1, 0.0, 1.0), ("download", 2, 12.0, 12.5),
                    ("late", 1, 10.0, 12.0), ("train", 1, 1.0, 10.0),
                    ("train", 2, 12.5, 15.5), ("upload", 2, 15.5, 16.0)]
    assert timeline.cuts == [(7, 10.0)]


def test_secure_aggregation_steps_are_drawn_from_the_log(tmp_path) -> None:
    """Under secure aggregation each sampled device's protocol steps follow its training,
    one bar per step from its previous message to this one's arrival, with a tick where
    the server took the message in; none overlaps another."""
    import json
    from dataclasses import replace
    from pathlib import Path

    from fedactors.reporting.timeline import SECAGG_STEPS, timeline_figure, timeline_from_file
    from fedactors.scenarios.loader import load_scenario
    from fedactors.simulation import RunOptions, run_scenario

    root = Path(__file__).resolve().parents[2]
    scenario = load_scenario(root / "scenarios/smart_home_secure.py")
    out = tmp_path / "run"
    run_scenario(replace(scenario, rounds=replace(scenario.rounds, count=2)),
                 RunOptions(out_dir=out))
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    sent = [(int(e["actor"][7:]), e["round"], e["step"], e["t"] + e["compute_s"] + e["upload_s"])
            for e in events if e["event"] == "secagg.sent"]
    computing = {(int(e["actor"][7:]), e["round"], e["t"], e["t"] + e["compute_s"])
                 for e in events if e["event"] == "secagg.sent" and e["compute_s"] > 0}
    taken = {(e["sender"], e["round"], e["step"]) for e in events
             if e["event"] == "secagg.received"}
    timeline = timeline_from_file(out / "events.jsonl", sample=400, max_rounds=None)
    chosen = set(timeline.devices)
    drawn = {(s.device, s.round, s.kind, s.end) for s in timeline.segments}
    mine = [m for m in sent if m[0] in chosen]
    # (An honest-but-curious run has no consistency check: no sign_view step.)
    assert mine and {k for _, _, k, _ in mine} == set(SECAGG_STEPS) - {"sign_view"}
    # Each sampled device's protocol compute (the cost model's seconds) is its own bar.
    crypto = {(s.device, s.round, s.start, s.end) for s in timeline.segments
              if s.kind == "crypto"}
    assert crypto and crypto <= {c for c in computing if c[0] in chosen}
    for d, r, step, arrival in mine:
        if (d, r, step) in taken:
            assert (d, r, step, arrival) in drawn or any(
                s.device == d and s.round == r and s.end == arrival for s in timeline.segments)
            assert (d, arrival) in timeline.arrivals or arrival > max(
                w.end for w in timeline.rounds if w.round == r)
    refused = [m for m in mine if m[:3] not in taken]
    assert refused  # some step message came after its step closed
    for d, r, step, arrival in refused:
        kinds = {s.kind for s in timeline.segments
                 if (s.device, s.round) == (d, r) and s.end == arrival}
        assert kinds and kinds <= {"late", "surplus"}, (d, r, step, kinds)
    for device in timeline.devices:
        bars = sorted((s for s in timeline.segments if s.device == device),
                      key=lambda s: (s.start, s.end))
        for a, b in zip(bars, bars[1:]):
            assert a.end <= b.start + 1e-9, (device, a, b)
    assert timeline_figure(timeline, "secure") is not None


def test_a_refusal_logged_in_a_later_round_draws_nothing_for_that_round() -> None:
    # Device 3's round-1 message reaches the server in round 2, which did not select it:
    # the server logs the refusal under round 2, and no round-2 bar may appear for it.
    events = EVENTS + [ev(13, "server", "update.late", round=2, step="advertise_keys",
                          sender=3, update_round=1, update_step="advertise_keys")]
    timeline = timeline_from_events(events)
    assert not [s for s in timeline.segments if s.device == 3 and s.round == 2]


def test_a_poisson_round_closed_by_all_reported_draws_the_rest_as_surplus() -> None:
    """``all-reported`` (a Poisson round: every sampled device reported) is no deadline:
    work past the round's end was not needed, as after a target, never late."""
    def bars(closed_by: str) -> set[str]:
        log = [ev(0, "server", "round.start", round=1, deadline=50.0, cohort=[1]),
               ev(1, "device-1", "request.received", round=1, compute_s=9.0),
               ev(5, "server", "round.end", round=1, closed_by=closed_by),
               ev(10, "device-1", "update.sent", round=1, upload_s=1.0)]  # past the end
        timeline = timeline_from_events(log)
        return {s.kind for s in timeline.segments if s.start >= 5.0}

    assert bars("all-reported") == bars("target") == {"surplus"}
    assert bars("deadline") == {"late"}
