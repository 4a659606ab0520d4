"""The fleet timeline: what a sample of devices was doing, in simulated time.

Built from events.jsonl alone. Per device and round:

* download: the server's ``round.start`` to the device's ``request.received``
  (started no earlier than the device's previous work ended, because a busy
  device's request waits in its mailbox);
* train: ``request.received`` to ``update.sent``;
* upload: ``update.sent`` for ``upload_s`` seconds, until the server has it;
* dropped: ``request.received`` to the device's ``dropped`` event (it went
  silent somewhere in training or upload);
* secure aggregation's steps (advertise keys, share keys, masked input,
  unmask): from the device's previous protocol message until this one reaches
  the server, waiting for the server's relay included; inside each, the
  device's protocol compute (``compute_s`` of ``secagg.sent``, from the cost
  model) is drawn as its own segment, crypto;
* late / surplus: any of the above that continued past the round's close,
  when the deadline closed it (late) or the target was already met, or in a
  Poisson round every sampled device had reported (surplus),
  the same split as ``late`` and ``surplus`` in metrics.jsonl. The server stops
  such work at the close (the device's ``cut`` event); the bar shows how long it
  would have needed, up to where the device's next round begins (bars of one
  device never overlap).

Offline periods are not in the event log (the server logs how many devices
were online, not which), so time outside these segments is shown as blank:
"not selected or idle", never as offline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from fedactors.reporting.closed_by import cut_as
from fedactors.reporting.rundir import EVENT_FIELDS, iter_jsonl
from fedactors.reporting.style import PHASE_COLOURS, paper_style, time_unit

#: Secure aggregation's steps, in protocol order (fedactors.secagg.envelopes.STEPS).
SECAGG_STEPS = ("advertise_keys", "share_keys", "masked_input", "sign_view", "unmask")
#: ... and the device's compute inside them.
SECAGG_KINDS = (*SECAGG_STEPS, "crypto")
KINDS = ("download", "train", "upload", "dropped", "late", "surplus", *SECAGG_KINDS)
KIND_LABELS = {
    "download": "downloading",
    "train": "training",
    "upload": "uploading",
    "dropped": "working, then dropped out",
    "late": "work cut by the deadline (late)",
    "surplus": "work cut, target met (surplus)",
    "advertise_keys": "SecAgg: advertise keys",
    "share_keys": "SecAgg: share keys",
    "masked_input": "SecAgg: masked input",
    "sign_view": "SecAgg: sign view",
    "unmask": "SecAgg: unmask",
    "crypto": "SecAgg: device computing",
}
DEFAULT_SAMPLE = 24
DEFAULT_ROUNDS = 12


@dataclass(frozen=True)
class Segment:
    device: int
    round: int
    kind: str
    start: float
    end: float


@dataclass(frozen=True)
class RoundWindow:
    round: int
    start: float
    deadline: float
    end: float
    closed_by: str


@dataclass
class Timeline:
    """Segments and marks of the sampled devices over the first rounds of a run."""

    devices: list[int]
    rounds: list[RoundWindow]
    segments: list[Segment] = field(default_factory=list)
    drops: list[tuple[int, float]] = field(default_factory=list)  # (device, t)
    cuts: list[tuple[int, float]] = field(default_factory=list)  # stopped by the close
    arrivals: list[tuple[int, float]] = field(default_factory=list)  # updates in time
    total_rounds: int = 0
    has_device_events: bool = True
    #: Each device's class name, when the log says (``run.start``'s ``classes``).
    kinds: dict[int, str] = field(default_factory=dict)

    def label(self, device: int) -> str:
        kind = self.kinds.get(device)
        return f"{kind} {device}" if kind else f"device {device}"

    def count(self, kind: str) -> int:
        return sum(1 for s in self.segments if s.kind == kind)

    @property
    def end(self) -> float:
        ends = [r.end for r in self.rounds] + [s.end for s in self.segments]
        return max(ends, default=0.0)


def sample_devices(participants: Iterable[int], k: int = DEFAULT_SAMPLE) -> list[int]:
    """``k`` devices spread evenly over the sorted ids of those ever selected.

    Deterministic, and since fleets number devices class by class, an even
    spread shows every kind of device rather than the first few of one kind.
    """
    ids = sorted(set(participants))
    if len(ids) <= k:
        return ids
    step = len(ids) / k
    return [ids[int(i * step + step / 2)] for i in range(k)]


def _kinds_of(devices: Iterable[int], classes: list) -> dict[int, str]:
    """Device ids are assigned class by class, in the order the fleet lists them."""
    bounds, start = [], 0
    for name, count in classes:
        bounds.append((start, start + int(count), str(name)))
        start += int(count)
    return {d: name for d in devices for lo, hi, name in bounds if lo <= d < hi}


def _device_id(actor: Any) -> Optional[int]:
    if isinstance(actor, str) and actor.startswith("device-"):
        try:
            return int(actor[7:])
        except ValueError:
            return None
    return None


def build_timeline(
    events: Callable[[], Iterator[dict[str, Any]]],
    sample: int = DEFAULT_SAMPLE,
    max_rounds: Optional[int] = DEFAULT_ROUNDS,
) -> Timeline:
    """Two passes over ``events()``: rounds and who took part, then the sample's work."""
    starts: dict[int, dict] = {}
    ends: dict[int, dict] = {}
    participants: set[int] = set()
    run_end = 0.0
    has_device_events = False
    classes: list = []
    for ev in events():
        run_end = max(run_end, float(ev.get("t", 0.0)))
        kind = ev.get("event")
        if kind == "run.start" and ev.get("actor") == "simulator":
            classes = ev.get("classes") or []
        if ev.get("actor") == "server" and kind == "round.start":
            starts[ev["round"]] = ev
        elif ev.get("actor") == "server" and kind == "round.end":
            ends[ev["round"]] = ev
        elif _device_id(ev.get("actor")) is not None:
            has_device_events = True
    shown = sorted(starts)[:max_rounds] if max_rounds else sorted(starts)
    windows = []
    for r in shown:
        start = float(starts[r]["t"])
        end_ev = ends.get(r, {})
        windows.append(RoundWindow(
            r, start, float(starts[r].get("deadline", start)),
            float(end_ev.get("t", run_end)), str(end_ev.get("closed_by", "unfinished")),
        ))
        participants.update(int(d) for d in starts[r].get("cohort", ()))
    timeline = Timeline([], windows, total_rounds=len(starts),
                        has_device_events=has_device_events)
    if not has_device_events:
        return timeline
    if not participants:  # a log without cohorts: fall back to who received requests
        participants = {
            d for ev in events() if ev.get("event") == "request.received"
            and (d := _device_id(ev.get("actor"))) is not None
        }
    timeline.devices = sample_devices(participants, sample)
    timeline.kinds = _kinds_of(timeline.devices, classes)

    chosen = set(timeline.devices)
    shown_rounds = {w.round for w in windows}
    work: dict[tuple[int, int], dict[str, Any]] = {}
    for ev in events():
        if ev.get("actor") == "server":
            # Secure aggregation: which of the sample's step messages the server took in.
            # Only those: a refusal is logged under the server's current round, which may
            # be one the sender was not even selected for.
            if ev.get("event") == "secagg.received" and ev.get("sender") in chosen:
                item = work.setdefault((int(ev["sender"]), ev.get("round")), {})
                item.setdefault("taken", set()).add(ev.get("step"))
            continue
        d = _device_id(ev.get("actor"))
        if d is None or d not in chosen or ev.get("round") not in shown_rounds:
            continue
        item = work.setdefault((d, ev["round"]), {})
        kind = ev.get("event")
        if kind == "request.received":
            item["received"] = float(ev["t"])
            item["compute_s"] = float(ev.get("compute_s", 0.0))
        elif kind == "update.sent":
            item["sent"] = float(ev["t"])
            item["upload_s"] = float(ev.get("upload_s", 0.0))
        elif kind == "dropped":
            item["dropped"] = float(ev["t"])
        elif kind == "cut":  # the server closed the round: the device stopped here
            item["cut"] = float(ev["t"])
        elif kind == "secagg.sent":
            item.setdefault("secagg", []).append(
                (str(ev.get("step")), float(ev["t"]), float(ev.get("compute_s", 0.0)),
                 float(ev.get("upload_s", 0.0))))

    cohorts = {r: {int(d) for d in starts[r].get("cohort", ())} for r in shown_rounds}
    busy_until: dict[int, float] = {}
    for window in windows:
        for d in timeline.devices:
            item = work.get((d, window.round))
            if item is None and d not in cohorts[window.round]:
                continue
            _add_work(timeline, d, window, item or {}, busy_until, run_end)
    timeline.segments = _clip_cut_work(timeline.segments)
    return timeline


def _clip_cut_work(segments: list[Segment]) -> list[Segment]:
    """End each cut segment (late, surplus: work the close cut short, drawn as far as it
    would have gone) where the same device's work of a later round begins, so no bar
    is drawn over another."""
    begins: dict[tuple[int, int], float] = {}
    for s in segments:
        if s.kind not in ("late", "surplus"):
            key = (s.device, s.round)
            begins[key] = min(begins.get(key, s.start), s.start)
    out = []
    for s in segments:
        if s.kind in ("late", "surplus"):
            later = [t for (d, r), t in begins.items() if d == s.device and r > s.round]
            end = min([s.end, *later])
            if end <= s.start:
                continue
            s = Segment(s.device, s.round, s.kind, s.start, end)
        out.append(s)
    return out


def _add_work(timeline: Timeline, d: int, window: RoundWindow, item: dict[str, float],
              busy_until: dict[int, float], run_end: float) -> None:
    """The segments of one device in one round, split at the round's close."""
    pieces: list[tuple[str, float, float]] = []
    received = item.get("received")
    begin = max(window.start, busy_until.get(d, window.start))
    pieces.append(("download", begin, received if received is not None else run_end))
    if received is not None:
        secure = item.get("secagg", [])
        if "dropped" in item and not secure:
            pieces.append(("dropped", received, item["dropped"]))
            timeline.drops.append((d, item["dropped"]))
        else:
            # Under secure aggregation training ends with the first protocol message.
            sent = item.get("sent", secure[0][1] if secure else
                            min(received + item.get("compute_s", 0.0), run_end))
            pieces.append(("train", received, sent))
            begin = sent
            for step, t, compute, upload in secure:
                arrival = t + compute + upload
                taken = step in item.get("taken", ())
                # A step message the server never took in (it came after the step closed,
                # or the round ended): drawn as cut.
                kind = step if taken else "late"
                pieces.append((kind, begin, t))  # waiting for the server's relay
                pieces.append(("crypto" if taken else "late", t, t + compute))
                pieces.append((kind, t + compute, arrival))  # on the wire
                if taken and arrival <= window.end:
                    timeline.arrivals.append((d, arrival))
                begin = arrival
            if "dropped" in item:  # silent at a later protocol step
                pieces.append(("dropped", begin, item["dropped"]))
                timeline.drops.append((d, item["dropped"]))
            elif "sent" in item:
                arrival = item["sent"] + item.get("upload_s", 0.0)
                pieces.append(("upload", item["sent"], arrival))
                if arrival <= window.end:
                    timeline.arrivals.append((d, arrival))
    after = cut_as(window.closed_by)
    for kind, start, end in pieces:
        if end <= start:
            continue
        if after and end > window.end:
            if start < window.end:
                timeline.segments.append(Segment(d, window.round, kind, start, window.end))
            timeline.segments.append(
                Segment(d, window.round, after, max(start, window.end), end))
        else:
            timeline.segments.append(Segment(d, window.round, kind, start, end))
    # Busy until its work really ended: where the server cut it, if it did (the rest of a
    # cut bar is what the work would have needed, not time the device spent on it).
    ends = [end for _, _, end in pieces]
    if "cut" in item:
        ends = [min(end, item["cut"]) for end in ends]
        timeline.cuts.append((d, item["cut"]))
    busy_until[d] = max([busy_until.get(d, 0.0)] + ends)


def timeline_from_file(path: Path, sample: int = DEFAULT_SAMPLE,
                       max_rounds: Optional[int] = DEFAULT_ROUNDS) -> Timeline:
    return build_timeline(lambda: iter_jsonl(path, EVENT_FIELDS), sample, max_rounds)


def timeline_from_events(events: Sequence[dict[str, Any]], sample: int = DEFAULT_SAMPLE,
                         max_rounds: Optional[int] = DEFAULT_ROUNDS) -> Timeline:
    return build_timeline(lambda: iter(events), sample, max_rounds)


def timeline_figure(timeline: Timeline, title: str = "") -> Optional[Figure]:
    """A Gantt chart: one row per sampled device, rounds as alternating bands."""
    if not timeline.devices or not timeline.rounds:
        return None
    unit, scale = time_unit(timeline.end)
    rows = {d: i for i, d in enumerate(timeline.devices)}
    with paper_style():
        fig = Figure(figsize=(7.2, max(2.6, 1.6 + 0.19 * len(rows))))
        ax = fig.subplots()
        for i, window in enumerate(timeline.rounds):
            if i % 2 == 0:
                ax.axvspan(window.start / scale, window.end / scale, color="#F2F2F2",
                           linewidth=0, zorder=0)
            ax.axvline(window.deadline / scale, color="#444444", linestyle=(0, (3, 2)),
                       linewidth=0.7, zorder=1)
        for kind in KINDS:
            by_row: dict[int, list[tuple[float, float]]] = {}
            for s in timeline.segments:
                if s.kind == kind:
                    by_row.setdefault(rows[s.device], []).append(
                        (s.start / scale, (s.end - s.start) / scale))
            for row, spans in by_row.items():
                ax.broken_barh(spans, (row - 0.36, 0.72), facecolors=PHASE_COLOURS[kind],
                               linewidth=0, zorder=2)
        if timeline.arrivals:
            ax.scatter([t / scale for _, t in timeline.arrivals],
                       [rows[d] for d, _ in timeline.arrivals], marker="|", s=30,
                       color="#1A1A1A", linewidths=0.9, zorder=3)
        if timeline.drops:
            ax.scatter([t / scale for _, t in timeline.drops],
                       [rows[d] for d, _ in timeline.drops], marker="x", s=16,
                       color="#1A1A1A", linewidths=0.9, zorder=3)
        if timeline.cuts:  # seen even when the device's next round starts at the cut
            ax.scatter([t / scale for _, t in timeline.cuts],
                       [rows[d] for d, _ in timeline.cuts], marker="4", s=30,
                       color="#1A1A1A", linewidths=0.9, zorder=3)
        ax.set_yticks(range(len(rows)), [timeline.label(d) for d in timeline.devices])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlim(timeline.rounds[0].start / scale, timeline.end / scale)
        ax.tick_params(axis="y", labelsize=6.5, length=0)
        ax.grid(False)
        ax.set_xlabel(f"Simulated time ({unit})")
        _round_numbers(ax, timeline.rounds, scale)
        shown = len(timeline.rounds)
        span = f"rounds {timeline.rounds[0].round}–{timeline.rounds[-1].round}"
        if shown < timeline.total_rounds:
            span += f" of {timeline.total_rounds}"
        ax.set_title(f"{title + ': ' if title else ''}{len(rows)} sampled devices, {span}",
                     loc="left", pad=16)
        handles = [Patch(color=PHASE_COLOURS[k], label=KIND_LABELS[k]) for k in KINDS
                   if k not in SECAGG_KINDS or timeline.count(k)]
        handles += [
            Line2D([], [], color="#1A1A1A", marker="|", linestyle="none", markersize=7,
                   label="update delivered in time"),
            Line2D([], [], color="#1A1A1A", marker="x", linestyle="none", markersize=5,
                   label="dropped out"),
            Line2D([], [], color="#1A1A1A", marker="4", linestyle="none", markersize=7,
                   label="stopped: the round closed"),
            Line2D([], [], color="#444444", linestyle=(0, (3, 2)), linewidth=0.7,
                   label="round deadline"),
            Patch(facecolor="white", edgecolor="#BBBBBB", label="blank: not selected / idle"),
        ]
        # Secure aggregation's steps add up to six entries: three columns keep them inside.
        fig.legend(handles=handles, loc="outside lower center",
                   ncols=4 if len(handles) <= 12 else 3, fontsize=7)
    return fig


def _round_numbers(ax: Any, rounds: Sequence[RoundWindow], scale: float) -> None:
    """Round numbers along the top, over the middle of each round's band."""
    top = ax.secondary_xaxis("top")
    every = max(1, len(rounds) // 15)
    picked = [w for i, w in enumerate(rounds) if i % every == 0]
    top.set_xticks([(w.start + w.end) / 2 / scale for w in picked],
                   [str(w.round) for w in picked], fontsize=6.5)
    top.tick_params(length=0, pad=1)
    top.set_xlabel("Round", fontsize=7, labelpad=2)
