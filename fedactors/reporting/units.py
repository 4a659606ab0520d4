"""Numbers as a person reads them (simulated durations, the canary ε), shared by the terminal
and the report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional


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


def neighbors_text(privacy: Mapping[str, Any]) -> Optional[str]:
    """The neighbouring datasets a run's ε is defined over (``replace-one`` for
    fixed-size rounds, ``add-or-remove-one`` for Poisson and FedBuff, ``zero-out``
    for Skellam): ε under different relations are not comparable numbers."""
    accounting = privacy.get("accounting")
    return accounting.get("neighboring") if isinstance(accounting, Mapping) else None


def mixed_neighbors_note(labelled: Sequence[tuple[str, Mapping[str, Any]]]) -> Optional[str]:
    """A warning when runs compared side by side state ε over different relations."""
    relations = {label: neighbors_text(p) for label, p in labelled if p}
    if len({r for r in relations.values() if r}) < 2:
        return None
    which = ", ".join(f"{label}: {r}" for label, r in relations.items() if r)
    return (f"These runs' ε are over different neighbouring datasets ({which}). They are not "
            "comparable numbers: for the same noise a replace-one ε is at least about twice an "
            "add-or-remove-one ε, and with fixed-size sampling often many times it "
            "(docs/privacy.md); do not compare them in the table or the ε figure.")

