"""The scenario option that turns secure aggregation on, and the checks it implies.

``Scenario(..., secure_aggregation=SecureAggregation.sparse())`` makes the
server collect the cohort's contributions with SecAgg / SecAgg+ instead of
reading each ``Update``. Only aggregators whose server side needs nothing but
the sum, and that can bound every coordinate they emit, qualify.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from fedactors.errors import ConfigError, stage_label
from fedactors.secagg.costs import CryptoCosts
from fedactors.secagg.parameters import (
    DEFAULT_CORRUPT,
    DEFAULT_DROPOUT,
    DEFAULT_FAILURE_LOG2,
    DEFAULT_SECURITY_LOG2,
    PlusParameters,
    complete_margins,
    complete_threshold,
    plus_parameters,
)
from fedactors.secagg.protocol import PROTOCOLS
from fedactors.validation import finite, non_negative_int, open_unit, positive, probability

GRAPHS = ("auto", "complete", "sparse")
MODES = tuple(PROTOCOLS)  # "real", "modeled"
THREATS = ("honest-but-curious", "malicious")
#: What a run in each mode establishes, in the words summary.json and the report use.
MODE_PROVES = {
    "real": "every protocol message was computed with real cryptography (X25519, "
            "ChaCha20-Poly1305, Shamir sharing, AES-CTR masks); in each round that completed "
            "the server unmasked only the sum, and an aborted round released nothing",
    "modeled": "no cryptography ran: the protocol's messages, sizes, dropouts, deadlines, aborts "
               "and compute time were simulated and the sum computed directly, so the run "
               "shows cost and behaviour, not secrecy",
}
#: What a malicious-server run adds to it (real mode: checked; modeled: only priced).
MALICIOUS_PROVES = {
    "real": "; devices signed their keys and their view of who dropped (Ed25519, PKI keys) "
            "and checked every view forwarded to them before releasing a share",
    "modeled": "; the signed keys and views were priced and sized, not made or checked",
}

#: Cohorts above this size use the SecAgg+ sparse graph under ``graph="auto"``.
#: Measured with benchmarks/secagg.py (docs/benchmarks.md, dim 1000): the
#: complete graph costs ~1 s of total compute per round at 100 devices, 4 s
#: at 200 and 12 s at 300 (~n^2.2), while SecAgg+ with calibrated (k, t)
#: takes ~10 s at 1,000. Below ~100 devices plus_parameters finds no sparse
#: graph meeting the default targets anyway (k = 88 of 99 at 100), so the
#: complete graph, with its exact t-of-n guarantee, is used up to there.
SPARSE_ABOVE = 100


@dataclass(frozen=True)
class SecureAggregation:
    """How the server runs secure aggregation each round.

    ``graph``: ``"complete"`` (SecAgg, Bonawitz et al. 2017), ``"sparse"``
    (SecAgg+, Bell et al. 2020) or ``"auto"`` (sparse for more than
    ``sparse_above`` selected devices). ``threshold_fraction``: complete
    graph only, secrets are shared t-of-n with t = floor(fraction * n) + 1.
    SecAgg+'s degree k and threshold t come from
    ``parameters.plus_parameters`` under four assumptions: ``max_dropout``
    (probability that an admitted device drops out somewhere in the
    protocol, training failures and ``step_dropout`` included; the server
    adds the over-selection margin itself), ``max_corrupt`` (probability that
    a device colludes with the server), ``failure_log2`` (abort probability
    <= 2**-failure_log2 per round) and ``security_log2`` (share collusion or
    graph disconnection <= 2**-security_log2). On the complete graph t comes
    from ``threshold_fraction`` (or, with a malicious server, from the
    targets), and the same four assumptions are checked against it: a t that
    misses a target is reported (``secagg_below_target``, a run warning).
    ``scale_bits``: fixed-point precision f (values are rounded to multiples
    of 2**-f). ``stochastic_rounding``: unbiased rounding with the device's
    generator (else round-to-nearest). ``step_timeout``: simulated seconds the
    server waits for each protocol step after advertising keys.
    ``step_dropout``: probability that a device which finished training goes
    silent before each of its protocol messages (four; five under a malicious
    server), on top of its class's training dropout.

    The server then learns only the sum of the cohort's contributions, so the
    scenario's aggregator must need nothing else (``needs_individual_updates``
    false) and must bound every coordinate it emits
    (``Aggregator.contribution_bounds``), e.g. ``DPMean`` or
    ``Clipped(clip_norm, WeightedMean(weighted=False))``; ``rounds.cohort_size``
    must be at least 2 and ``mode=FedBuff(...)`` is refused. The server is
    modelled honest-but-curious unless ``server="malicious"``. See
    docs/secure_aggregation.md.

    Args:
        graph: ``"auto"`` (default), ``"complete"`` or ``"sparse"``, as above.
        sparse_above: Under ``"auto"``, use the sparse graph when more than this
            many devices are selected. Default 100 (measured break-even).
        threshold_fraction: Complete graph only: fraction in (0, 1) of the n
            devices whose shares rebuild a secret, t = floor(fraction * n) + 1.
            Default None: t from the targets, as SecAgg+ chooses its own: the
            largest t meeting both the abort and the collusion target
            (``parameters.complete_threshold``), or, where none does, a majority
            n // 2 + 1 (secrecy first; the run then warns that the targets were
            missed). At the defaults a t meeting both exists from 89 devices.
        max_dropout: Assumed probability in [0, 1) that an admitted device drops
            out during the protocol (sizes SecAgg+'s k and t; checked against the
            complete graph's t). Default 0.3.
        max_corrupt: Assumed probability in [0, 1) that a device colludes with
            the server (sizes SecAgg+'s k and t; checked against the complete
            graph's t). Default 0.1.
        failure_log2: Target (either graph; a miss is reported): a round aborts with probability at most
            ``2 ** -failure_log2``, in bits, in (0, 1000]. Default 20.
        security_log2: Target (either graph; a miss is reported): shares leak or the masking graph
            disconnects with probability at most ``2 ** -security_log2``, in
            bits, in (0, 1000]. Default 40.
        scale_bits: Fixed-point precision f in bits, 0 to 52: values are
            rounded to multiples of ``2 ** -f``. Default 16.
        stochastic_rounding: Round each value up or down at random with the
            device's generator, unbiased (default True); False rounds to
            nearest.
        step_timeout: Simulated seconds (> 0) the server waits for each
            protocol step after advertising keys. Default 10.0.
        step_dropout: Probability in [0, 1) that a device goes silent before
            each of its protocol messages (four; five under a malicious
            server), on top of its class's training dropout. Default 0.0.
        mode: ``"real"`` (default) runs the cryptography; ``"modeled"`` skips
            it and keeps everything else (messages and their sizes, graph,
            dropouts, deadlines, aborts, compute time), computing the sum
            directly: the same sums, aborts, metrics, bytes and simulated
            times as ``"real"``, at a fraction of the wall time, and no
            evidence of secrecy (``fedactors.secagg.modeled``).
        costs: The protocol's compute prices (``fedactors.secagg.costs.CryptoCosts``):
            each step a device performs takes simulated time, scaled by its
            ``compute``, and the server's unmasking too. Default
            ``CryptoCosts.calibrated()``, measured on this project's
            implementation; ``CryptoCosts.free()`` makes the cryptography
            instantaneous.
        server: ``"honest-but-curious"`` (default: the server follows the
            protocol) or ``"malicious"``: it may lie about who dropped, so
            devices sign their views in a consistency-check round (Ed25519,
            keys from a PKI) and abort on inconsistent ones, and (k, t) also
            meet Bell et al.'s equivocation condition, 2t > k + 1 + corrupt
            neighbours, at ``security_log2`` (on the complete graph t is
            derived the same way and ``threshold_fraction`` is refused). Far
            larger k: 766 of 999 at 1,000 devices under the defaults.

    Examples:
        >>> from fedactors import SecureAggregation
        >>> option = SecureAggregation.sparse(max_dropout=0.2)
        >>> option.graph, option.uses_sparse_graph(selected=50)
        ('sparse', True)
        >>> SecureAggregation().uses_sparse_graph(selected=50)  # "auto": complete up to 100
        False
        >>> plus = SecureAggregation.sparse().plus_parameters(selected=1000, admitted=1000)
        >>> plus.degree, plus.threshold, plus.meets_targets
        (100, 42, True)
    """

    graph: str = "auto"
    sparse_above: int = SPARSE_ABOVE
    threshold_fraction: Optional[float] = None
    max_dropout: float = DEFAULT_DROPOUT
    max_corrupt: float = DEFAULT_CORRUPT
    failure_log2: float = DEFAULT_FAILURE_LOG2
    security_log2: float = DEFAULT_SECURITY_LOG2
    scale_bits: int = 16
    stochastic_rounding: bool = True
    step_timeout: float = 10.0
    step_dropout: float = 0.0
    mode: str = "real"
    costs: CryptoCosts = field(default_factory=CryptoCosts.calibrated)
    server: str = "honest-but-curious"

    def __post_init__(self) -> None:
        if self.graph not in GRAPHS:
            raise ConfigError("secure_aggregation.graph",
                              f"must be one of {', '.join(GRAPHS)}, got {self.graph!r}")
        if self.mode not in MODES:
            raise ConfigError("secure_aggregation.mode",
                              f"must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.server not in THREATS:
            raise ConfigError("secure_aggregation.server",
                              f"must be one of {', '.join(THREATS)}, got {self.server!r}")
        if not isinstance(self.costs, CryptoCosts):
            raise ConfigError("secure_aggregation.costs",
                              f"must be a CryptoCosts, got {type(self.costs).__name__}")
        try:
            non_negative_int("sparse_above", self.sparse_above)
            if self.threshold_fraction is not None:
                open_unit("threshold_fraction", self.threshold_fraction)
                # Set where it cannot apply, it would be recorded in summary.json as if it had.
                if self.graph == "sparse":
                    raise ConfigError("threshold_fraction", "applies to the complete graph only; "
                                      "graph='sparse' (SecAgg+) takes t from max_dropout, "
                                      "max_corrupt and the targets: remove it")
                if self.server == "malicious":
                    raise ConfigError("threshold_fraction", "is not used with "
                                      "server='malicious' (t comes from the targets and the "
                                      "equivocation bound): remove it")
            for name in ("max_dropout", "max_corrupt"):
                value = getattr(self, name)
                # 1.0 would make every device drop (or collude): no graph helps.
                if not 0.0 <= probability(name, value) < 1.0:
                    raise ConfigError(name, f"must be in [0, 1), got {value!r}")
            for name in ("failure_log2", "security_log2"):
                value = getattr(self, name)
                # Above ~1000 bits the binomial tails underflow to 0 and every k "passes".
                if not 0.0 < finite(name, value) <= 1000.0:
                    raise ConfigError(name, f"must be in (0, 1000], got {value!r}")
            non_negative_int("scale_bits", self.scale_bits)
            if self.scale_bits > 52:
                raise ConfigError("scale_bits", f"must be <= 52, got {self.scale_bits!r}")
            if not isinstance(self.stochastic_rounding, bool):
                raise ConfigError("stochastic_rounding",
                                  f"must be true or false, got {self.stochastic_rounding!r}")
            positive("step_timeout", self.step_timeout)
            # 1.0: every device silent before its first protocol message; no round could run.
            if not 0.0 <= probability("step_dropout", self.step_dropout) < 1.0:
                raise ConfigError("step_dropout", f"must be in [0, 1) (1 silences every device "
                                  f"before the protocol starts), got {self.step_dropout!r}")
        except ConfigError as exc:
            raise exc.within("secure_aggregation") from None

    @classmethod
    def complete(cls, **kwargs: Any) -> SecureAggregation:
        """Original SecAgg: every device shares with and masks against every other."""
        return cls(graph="complete", **kwargs)

    @classmethod
    def sparse(cls, **kwargs: Any) -> SecureAggregation:
        """SecAgg+: a random Harary graph of degree O(log n) from the stated assumptions."""
        return cls(graph="sparse", **kwargs)

    def plus_parameters(self, selected: int, admitted: int) -> PlusParameters:
        """SecAgg+ (k, t) for a graph over ``selected`` devices of which <= ``admitted`` take part.

        Devices past the cohort target are refused after training, which to
        the graph is dropout: survival (1 - max_dropout) scales by
        admitted / selected. The ring order is random, so it is independent
        of who is cut.
        """
        return plus_parameters(selected, self._dropout(selected, admitted), self.max_corrupt,
                               self.failure_log2, self.security_log2, self.malicious)

    @property
    def malicious(self) -> bool:
        """Whether the server is modelled as lying about dropouts (``server="malicious"``)."""
        return self.server == "malicious"

    def _dropout(self, selected: int, admitted: int) -> float:
        keep = (1.0 - self.max_dropout) * min(1.0, admitted / max(selected, 1))
        return 1.0 - keep

    def complete_parameters(self, selected: int, admitted: int) -> PlusParameters:
        """(k = n - 1, t) for the complete graph over ``selected`` devices, and its real margins.

        Honest-but-curious with ``threshold_fraction`` set: t = floor(threshold_fraction * n)
        + 1; by default the largest t meeting both targets (``complete_threshold``), or a
        majority n // 2 + 1 when none does. Malicious: the largest t meeting the abort
        target and the equivocation bound (``threshold_fraction`` is then ignored).
        Either way the margins are those of ``plus_parameters`` at degree n - 1 under
        ``max_dropout`` (scaled for over-selection) and ``max_corrupt``: abort (fewer than
        t survivors) and share collusion (t or more of a device's holders corrupt; with a
        malicious server also equivocation). A complete graph cannot disconnect, so there
        is no connectivity bound. ``meets_targets`` is true only when both margins reach
        ``failure_log2`` and ``security_log2``.
        """
        n = selected
        if n <= 1:  # nobody else holds a share: nothing to abort on or collude over
            return PlusParameters(n, 0, 1, math.inf, math.inf, True)
        dropout = self._dropout(selected, admitted)
        if self.malicious:
            t = complete_threshold(n, dropout, self.max_corrupt, self.failure_log2,
                                   self.security_log2, malicious=True).highest
        elif self.threshold_fraction is not None:
            t = min(n, math.floor(self.threshold_fraction * n) + 1)
        else:
            span = complete_threshold(n, dropout, self.max_corrupt, self.failure_log2,
                                      self.security_log2)
            # Where no t meets both targets, secrecy first: a majority (a round that
            # aborts leaks nothing; a lower t would let fewer colluders unmask).
            t = span.highest if span.meets_targets else n // 2 + 1
        return complete_margins(n, t, dropout, self.max_corrupt, self.failure_log2,
                                self.security_log2, self.malicious)

    def describe(self) -> dict[str, Any]:
        """What a run with this option states in ``summary.json`` (``secure_aggregation``)."""
        return {
            "mode": self.mode,
            "graph": self.graph,
            "threshold_fraction": self.threshold_fraction,
            "server": self.server,
            "max_dropout": self.max_dropout,
            "max_corrupt": self.max_corrupt,
            "crypto_costs": self.costs.source,
            "proves": MODE_PROVES[self.mode]
                      + (MALICIOUS_PROVES[self.mode] if self.malicious else ""),
        }

    def uses_sparse_graph(self, selected: int) -> bool:
        """Whether a round with ``selected`` devices runs SecAgg+ (else SecAgg)."""
        if self.graph == "auto":
            return selected > self.sparse_above
        return self.graph == "sparse"


def check_aggregator(aggregator: Any, dim: int = 1) -> None:
    """Refuse, with a ConfigError naming ``aggregator``, stages secure aggregation cannot run.

    Bounds are probed with the aggregator's initial broadcast parameters; the
    server checks them again every round (a clip norm can change).
    """
    if aggregator.needs_individual_updates:
        raise ConfigError(
            "aggregator",
            f"{stage_label(aggregator)} needs individual updates (needs_individual_updates=True), "
            "which secure_aggregation hides from the server",
        )
    params = aggregator.client_params(aggregator.initial_state(dim))
    bounds = aggregator.contribution_bounds(params, dim)
    if not bounds:
        raise ConfigError(
            "aggregator",
            f"{stage_label(aggregator)} gives no contribution_bounds, so fixed-point "
            "secure_aggregation "
            "cannot choose a range that never wraps; wrap it in Clipped(clip_norm, "
            "WeightedMean(weighted=False)) or use DPMean",
        )
    for key, b in bounds.items():
        if not (isinstance(b, (int, float, np.floating)) and np.isfinite(b) and b > 0):
            raise ConfigError("aggregator", f"contribution bound of {key!r} must be a finite "
                                            f"number > 0, got {b!r}")
