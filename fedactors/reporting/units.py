"""Numbers as a person reads them (simulated durations, the canary ε), shared by the terminal
and the report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def format_duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def empirical_text(block: Mapping[str, Any]) -> str:
    """summary.json's ``privacy.empirical`` in a few words: the estimate and how many
    canaries it rests on."""
    eps = block.get("epsilon")
    if eps is None:
        return "none (the model did not change)"
    return f"{eps:.3f} ({block['canaries_inserted']} canaries)"


def delta_text(privacy: Mapping[str, Any]) -> str:
    """The δ a run's ε holds at, as summary.json states it: ``delta``, plus Skellam's
    ``delta_truncation`` where the noise shares' truncation adds one."""
    delta = privacy.get("delta")
    extra = privacy.get("delta_truncation")
    text = "?" if delta is None else f"{delta:g}"
    return f"{text} + {extra:.2g} (truncation)" if extra else text
