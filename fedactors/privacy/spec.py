"""``Privacy``: a scenario's differential-privacy budget options.

Kept free of TensorFlow and dp-accounting imports so that loading and
validating a scenario stays quick; the accountant is built when a run starts
(:mod:`fedactors.privacy.budget`).

What is accounted is decided by the rest of the scenario, not repeated here:
the noise comes from the scenario's DP aggregator (``DPMean``), the
population is the fleet size ``N`` and the sampling is the server's real one
(``Rounds.sampling``), so the ε reported cannot drift from what was run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from fedactors.errors import ConfigError
from fedactors.validation import non_negative_int, open_unit, positive

METHODS = ("best", "rdp", "pld")
#: Default delta is ``min(DEFAULT_DELTA, N ** -DELTA_EXPONENT)``: 1e-5 for any
#: fleet under ~35,000 devices, and always well below 1/N (a delta near 1/N
#: would allow "publish one user's data" mechanisms).
DEFAULT_DELTA = 1e-5
DELTA_EXPONENT = 1.1


def default_delta(population: int) -> float:
    """``min(DEFAULT_DELTA, population ** -DELTA_EXPONENT)``, the δ used when none is given."""
    return min(DEFAULT_DELTA, float(population) ** -DELTA_EXPONENT)


@dataclass(frozen=True)
class Privacy:
    """User-level (ε, δ) reporting and an optional budget for a DP scenario.

    * ``target_epsilon``: stop training *before* the round that would push ε
      above it. ``None``: no budget, ε is only reported.
    * ``delta``: the δ at which ε is reported; ``None`` means
      ``default_delta`` of the fleet size.
    * ``method``: dp-accounting bound(s) to use, see
      ``fedactors.privacy.accounting.PrivacyLedger`` (``"pld"`` needs
      ``Rounds(sampling="poisson")``).

    Only a scenario whose aggregator declares a DP release (``DPMean``) may set
    it; such a scenario without ``privacy=`` reports ε with ``Privacy()``'s
    defaults. The noise, the population (fleet size ``N``) and the sampling
    (``Rounds.sampling``) the ε is computed from come from the rest of the
    scenario. What the ε assumes (uniform sampling of the whole fleet, no
    selection by availability, every sampled report summed) is in
    docs/privacy.md.

    Args:
        target_epsilon: Privacy budget ε (> 0). Before each round (each buffer
            under FedBuff) the server checks whether releasing it would push ε
            above this, and if so stops the run (``stopped: "privacy-budget"``).
            ``None`` (default): no budget.
        delta: The δ (strictly between 0 and 1) of the (ε, δ) guarantee.
            ``None`` (default): ``min(1e-5, N ** -1.1)`` for a fleet of ``N``
            devices, always well below ``1 / N``.
        method: Accounting bound: ``"best"`` (default, the tightest valid one:
            the minimum of RDP and PLD where PLD applies), ``"rdp"`` (Rényi DP
            only) or ``"pld"`` (privacy-loss distributions; needs
            ``Rounds(sampling="poisson")`` or FedBuff mode).
        min_separation: DP-FTRL (``DPMean.tree``) only: after a device
            contributes to a release, the server keeps it out of the next
            ``min_separation`` releases (it is not selected, or under FedBuff
            not given work, until then). The ε is then bounded for any
            participation, whoever is online. Default 0: no rule (a device may
            contribute to consecutive releases, and the guarantee is
            accounted for that).
        canaries: Number of canary clients to insert for the one-shot
            empirical ε estimate (Andrew et al. 2024, docs/privacy.md): 0
            (default) for none, else at least 2 (the paper uses 1000). As
            many more are drawn and never inserted, as a check. The estimate
            is reported next to ε; it is not a guarantee. Synchronous rounds
            with a central-noise ``DPMean`` only.

    Examples:
        >>> from fedactors import Privacy
        >>> Privacy(target_epsilon=5.0).delta_for(population=1_000)  # default delta
        1e-05
        >>> Privacy(target_epsilon=5.0, delta=1e-6, method="rdp").delta_for(population=1_000)
        1e-06
    """

    target_epsilon: Optional[float] = None
    delta: Optional[float] = None
    method: str = "best"
    min_separation: int = 0
    canaries: int = 0

    def __post_init__(self) -> None:
        if self.target_epsilon is not None:
            if isinstance(self.target_epsilon, bool):
                raise ConfigError("target_epsilon", f"must be a number > 0, got {self.target_epsilon!r}")
            positive("target_epsilon", self.target_epsilon)
        if self.delta is not None:
            open_unit("delta", self.delta)
        if self.method not in METHODS:
            raise ConfigError("method", f"must be one of {METHODS}, got {self.method!r}")
        non_negative_int("min_separation", self.min_separation)
        if non_negative_int("canaries", self.canaries) == 1:  # one cosine has no spread to fit
            raise ConfigError("canaries", "must be 0 (none) or at least 2, got 1")

    def delta_for(self, population: int) -> float:
        """The δ to report at for a fleet of ``population`` devices."""
        return default_delta(population) if self.delta is None else float(self.delta)
