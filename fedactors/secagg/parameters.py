"""SecAgg+ degree k and threshold t from stated dropout and corruption assumptions.

A simplified version of the parameter analysis of Bell et al. (2020, "Secure
Single-Server Aggregation with (Poly)Logarithmic Overhead"), for the
honest-but-curious server of this package. The graph is a Harary graph of
even degree k over a uniformly random ring order (``graph.harary_graph``);
device u's secrets are shared t-of-(k+1) among its closed neighbourhood N[u].
Each device independently drops out somewhere in the protocol with
probability ``dropout`` (delta) and is corrupt (colludes with the server) with
probability ``corrupt`` (gamma). Three events are bounded, each by a union
bound over the n devices (or pairs of ring windows) with exact binomial tails:

* **correctness** (the server can finish): some closed neighbourhood keeps
  fewer than t survivors. The survivors in N[u] are Binomial(k+1, 1-delta)
  whether u itself survived (the server needs t shares of b_u) or dropped
  (t shares of s_u^SK, all from neighbours). Bound: n * P[Bin(k+1, 1-delta) < t].
* **secrecy of shares**: some honest device has t or more corrupt neighbours,
  who together with the server could rebuild both b_u and s_u^SK (an honest
  holder releases only one of the two). Bound: n * P[Bin(k, gamma) >= t].
* **connectivity**: removing the dropped and the corrupt devices splits the
  honest survivors' masking graph, so the server would learn the partial sum
  of a component. On the Harary ring that needs at least two maximal runs of
  >= k/2 consecutive removed positions; each run has a distinct start (a kept
  position followed by k/2 removed ones), on disjoint positions, so with
  q = 1 - (1-delta)(1-gamma): P <= C(n, 2) * ((1-q) * q^(k/2))^2.

Correctness is held to 2^-failure_log2 (an abort only skips a round);
secrecy and connectivity to 2^-security_log2. We choose the smallest even k
for which some t meets all three, and then the *largest* such t (the most
collusion the sharing resists). The paper's malicious-server condition
(t large enough that a server lying about dropouts cannot collect both share
kinds from honest holders) is *not* enforced: this package models an
honest-but-curious server and has no consistency-check round, so t > k/2 is
not required. If no k <= n-1 works, the complete graph (k = n-1) is returned
with ``meets_targets=False`` and the t that best balances the two goals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from scipy.stats import binom

from fedactors.errors import ConfigError
from fedactors.validation import positive

#: Defaults of the assumptions, shared by ``SecureAggregation`` and ``secagg_plus_graph``.
DEFAULT_DROPOUT = 0.3
DEFAULT_CORRUPT = 0.1
DEFAULT_FAILURE_LOG2 = 20.0
DEFAULT_SECURITY_LOG2 = 40.0

_LN2 = math.log(2.0)


@dataclass(frozen=True)
class PlusParameters:
    """The chosen degree and threshold, and the guarantees they achieve (in bits)."""

    n: int
    degree: int  # k; n - 1 means the complete graph
    threshold: int  # t, out of the k + 1 holders of N[u]
    failure_log2: float  # -log2 of the union bound on an abort
    security_log2: float  # -log2 of the bound on shares or connectivity failing
    meets_targets: bool

    @property
    def complete(self) -> bool:
        return self.degree >= self.n - 1


def abort_log2(n: int, degree: int, threshold: int, dropout: float) -> float:
    """log2 of n * P[Bin(k+1, 1-dropout) < t]: some neighbourhood has < t survivors."""
    if threshold <= 0:
        return -math.inf
    return math.log2(n) + float(binom.logcdf(threshold - 1, degree + 1, 1.0 - dropout)) / _LN2


def collusion_log2(n: int, degree: int, threshold: int, corrupt: float) -> float:
    """log2 of n * P[Bin(k, corrupt) >= t]: some device has >= t corrupt share holders."""
    return math.log2(n) + float(binom.logsf(threshold - 1, degree, corrupt)) / _LN2


def disconnect_log2(n: int, degree: int, dropout: float, corrupt: float) -> float:
    """log2 of the bound on the honest survivors' Harary graph splitting (see module doc)."""
    if degree >= n - 1:  # complete; also two disjoint runs of k/2 + 1 positions need n >= k + 2
        return -math.inf
    q = 1.0 - (1.0 - dropout) * (1.0 - corrupt)  # removed: dropped or corrupt
    if q <= 0.0:
        return -math.inf
    if q >= 1.0:
        return 0.0
    return math.log2(n * (n - 1) / 2) + 2 * (math.log2(1.0 - q) + degree / 2 * math.log2(q))


def _largest_live_threshold(n: int, degree: int, dropout: float, failure_log2: float) -> int:
    """Largest t with abort_log2 <= -failure_log2 (0 if even t = 1 fails)."""
    m = degree + 1
    # Survivors are Bin(m, 1-dropout); the ppf of the allowed tail mass puts t near the answer.
    tail = 2.0 ** (-failure_log2) / n
    guess = int(binom.ppf(tail, m, 1.0 - dropout)) if tail > 0 else 0
    t = max(0, min(m, guess + 1))
    while t > 0 and abort_log2(n, degree, t, dropout) > -failure_log2:
        t -= 1
    while t < m and abort_log2(n, degree, t + 1, dropout) <= -failure_log2:
        t += 1
    return t


def _validate(n: int, dropout: float, corrupt: float, failure_log2: float,
              security_log2: float) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError("n", f"must be an int >= 1, got {n!r}")
    for name, p in (("max_dropout", dropout), ("max_corrupt", corrupt)):
        if not (isinstance(p, (int, float)) and 0.0 <= p < 1.0):
            raise ConfigError(name, f"must be in [0, 1), got {p!r}")
    positive("failure_log2", failure_log2)
    positive("security_log2", security_log2)


@lru_cache(maxsize=256)
def plus_parameters(
    n: int, dropout: float = DEFAULT_DROPOUT, corrupt: float = DEFAULT_CORRUPT,
    failure_log2: float = DEFAULT_FAILURE_LOG2, security_log2: float = DEFAULT_SECURITY_LOG2,
) -> PlusParameters:
    """Smallest even degree k, and the largest t for it, meeting all three bounds."""
    _validate(n, dropout, corrupt, failure_log2, security_log2)
    if n == 1:
        return PlusParameters(1, 0, 1, math.inf, math.inf, True)
    for k in range(2, n + 1, 2):
        k = min(k, n - 1)  # past n - 2 the Harary graph is the complete graph
        t = _largest_live_threshold(n, k, dropout, failure_log2)
        if t < 1:
            continue
        secure = max(collusion_log2(n, k, t, corrupt), disconnect_log2(n, k, dropout, corrupt))
        if secure <= -security_log2:
            return PlusParameters(n, k, t, -abort_log2(n, k, t, dropout), -secure, True)
    return _complete_fallback(n, dropout, corrupt, failure_log2, security_log2)


def _complete_fallback(n: int, dropout: float, corrupt: float, failure_log2: float,
                       security_log2: float) -> PlusParameters:
    """No sparse graph works: the complete graph, with the t maximising the weaker margin."""
    k = n - 1

    def margins(t: int) -> tuple[float, float]:
        return -abort_log2(n, k, t, dropout), -collusion_log2(n, k, t, corrupt)

    def balance(t: int) -> float:
        fail, sec = margins(t)
        return min(fail / failure_log2, sec / security_log2)

    # The abort margin falls and the collusion margin rises with t: bisect for the
    # last t where the abort margin is still the larger (relative to its target).
    lo, hi = 1, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        fail, sec = margins(mid)
        if fail / failure_log2 >= sec / security_log2:
            lo = mid
        else:
            hi = mid - 1
    t = max((lo, min(lo + 1, n)), key=balance)
    fail, sec = margins(t)
    return PlusParameters(n, k, t, fail, sec, fail >= failure_log2 and sec >= security_log2)
