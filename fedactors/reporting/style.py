"""One look for every figure: colours, fonts and units shared by all plots.

Keeping colours here means a dropped device is the same vermillion in the
participation bars and in the fleet timeline, and run *k* has the same colour
in every comparison figure.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib

matplotlib.use("Agg")

from matplotlib import rc_context  # noqa: E402

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
RUN_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
               "#000000", "#F0E442")

OUTCOME_COLOURS = {
    "reported": "#009E73",
    "refused": "#CC79A7",
    "late": "#E69F00",
    "dropped": "#D55E00",
    "surplus": "#BBBBBB",
}

PHASE_COLOURS = {
    "download": "#56B4E9",
    "train": "#0072B2",
    "upload": "#009E73",
    "dropped": OUTCOME_COLOURS["dropped"],
    "late": OUTCOME_COLOURS["late"],
    "surplus": OUTCOME_COLOURS["surplus"],
    # Secure aggregation's steps, each from the device's previous message to this one's
    # arrival (waiting for the server's relay included).
    "advertise_keys": "#CC79A7",
    "share_keys": "#F0E442",
    "masked_input": "#8C564B",
    "sign_view": "#88CCEE",
    "unmask": "#332288",
    # The device's own protocol compute inside a step (the cost model's seconds).
    "crypto": "#000000",
}

DPI = 150

_RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#DDDDDD",
    "grid.linewidth": 0.6,
    "axes.axisbelow": True,
    "lines.linewidth": 1.6,
    "legend.frameon": False,
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.05,
    "figure.constrained_layout.use": True,
}


@contextmanager
def paper_style() -> Iterator[None]:
    """Apply the figure style for the duration of a plot (no global rcParams change)."""
    with rc_context(_RC):
        yield


def run_colour(index: int) -> str:
    return RUN_COLOURS[index % len(RUN_COLOURS)]


def time_unit(max_seconds: float) -> tuple[str, float]:
    """A unit that keeps simulated-time tick labels short: (name, seconds per unit)."""
    if max_seconds >= 3 * 3600:
        return "h", 3600.0
    if max_seconds >= 120:
        return "min", 60.0
    return "s", 1.0


def byte_unit(max_bytes: float) -> tuple[str, float]:
    for name, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if max_bytes >= size:
            return name, size
    return "B", 1.0
