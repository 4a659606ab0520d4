"""SecAgg+ degree k and threshold t from stated dropout and corruption assumptions.

A simplified version of the parameter analysis of Bell et al. (2020, "Secure
Single-Server Aggregation with (Poly)Logarithmic Overhead"), for an
honest-but-curious server and, with ``malicious=True``, for a server that lies
about who dropped (the consistency check of :mod:`fedactors.secagg.consistency`).
The graph is a Harary graph of even degree k over a uniformly random ring order
(``graph.harary_graph``); device u's secrets are shared t-of-(k+1) among its
closed neighbourhood N[u]. Each device independently drops out somewhere in the
protocol with probability ``dropout`` (delta) and is corrupt (colludes with the
server) with probability ``corrupt`` (gamma). Three events (four against a
malicious server) are bounded, each by a union
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

* **equivocation** (malicious server only): a server lying about u's status
  needs t signers in N[u] for "alive" (to get b_u shares) and t for "dropped"
  (s_u^SK shares); honest devices sign one view each, so that needs the c_u
  corrupt devices of N[u] to make up 2t - (k+1). Bound:
  n * P[Bin(k, gamma) >= 2t - k - 1], which is 1 (never met) unless
  t > (k+1)/2. It implies the secrecy-of-shares bound (2t - k - 1 <= t).
  The abort bound is unchanged: the signers u needs are the survivors of N[u].

Correctness is held to 2^-failure_log2 (an abort only skips a round);
secrecy, connectivity and equivocation to 2^-security_log2. We choose the
smallest even k for which some t meets them all, and then the *largest* such t
(the most collusion the sharing resists; every security bound falls as t
grows, so it is the largest t meeting the abort bound). Without
``malicious`` t > k/2 is not required, and the results are those of an
honest-but-curious server. If no k <= n-1 works, the complete graph (k = n-1)
is returned with ``meets_targets=False`` and the t that best balances the two
goals; ``complete_threshold`` gives the whole range of t that works on the
complete graph.
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


def equivocation_log2(n: int, degree: int, threshold: int, corrupt: float) -> float:
    """log2 of n * P[Bin(k, corrupt) >= 2t - k - 1]: some device's corrupt holders let a lying
    server back both of its statuses with t signers (log2 n, a certainty, when 2t <= k + 1)."""
    return collusion_log2(n, degree, 2 * threshold - degree - 1, corrupt)


def _security_log2(n: int, degree: int, threshold: int, corrupt: float, malicious: bool) -> float:
    """log2 of the bound on the shares' secrecy (collusion, and equivocation if malicious)."""
    bound = collusion_log2(n, degree, threshold, corrupt)
    if malicious:
        bound = max(bound, equivocation_log2(n, degree, threshold, corrupt))
    return bound


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
    malicious: bool = False,
) -> PlusParameters:
    """Smallest even degree k, and the largest t for it, meeting all three bounds (four if
    ``malicious``: the server may lie about dropouts)."""
    _validate(n, dropout, corrupt, failure_log2, security_log2)
    if n == 1:
        return PlusParameters(1, 0, 1, math.inf, math.inf, True)
    for k in range(2, n + 1, 2):
        k = min(k, n - 1)  # past n - 2 the Harary graph is the complete graph
        t = _largest_live_threshold(n, k, dropout, failure_log2)
        if t < 1:
            continue
        secure = max(_security_log2(n, k, t, corrupt, malicious),
                     disconnect_log2(n, k, dropout, corrupt))
        if secure <= -security_log2:
            return PlusParameters(n, k, t, -abort_log2(n, k, t, dropout), -secure, True)
    return _complete_fallback(n, dropout, corrupt, failure_log2, security_log2, malicious)


@dataclass(frozen=True)
class CompleteThresholds:
    """The thresholds t that meet both targets on the complete graph (k = n - 1).

    ``lowest``..``highest`` when ``meets_targets``; otherwise no t does, and both are the t
    that best balances the two margins (as ``plus_parameters`` falls back to)."""

    n: int
    lowest: int  # the smallest t meeting the security target
    highest: int  # the largest t meeting the abort target
    meets_targets: bool

    @property
    def thresholds(self) -> range:
        return range(self.lowest, self.highest + 1) if self.meets_targets else range(0)


@lru_cache(maxsize=256)
def complete_threshold(
    n: int, dropout: float = DEFAULT_DROPOUT, corrupt: float = DEFAULT_CORRUPT,
    failure_log2: float = DEFAULT_FAILURE_LOG2, security_log2: float = DEFAULT_SECURITY_LOG2,
    malicious: bool = False,
) -> CompleteThresholds:
    """Every t meeting the abort and security targets when all n devices neighbour each other."""
    _validate(n, dropout, corrupt, failure_log2, security_log2)
    if n == 1:
        return CompleteThresholds(1, 1, 1, True)
    k = n - 1
    highest = _largest_live_threshold(n, k, dropout, failure_log2)
    # The security bound falls as t grows: bisect for the smallest t meeting it (n + 1: none).
    lo, hi = 1, n + 1
    while lo < hi:
        mid = (lo + hi) // 2
        if _security_log2(n, k, mid, corrupt, malicious) <= -security_log2:
            hi = mid
        else:
            lo = mid + 1
    if 1 <= lo <= highest:
        return CompleteThresholds(n, lo, highest, True)
    t = _complete_fallback(n, dropout, corrupt, failure_log2, security_log2, malicious).threshold
    return CompleteThresholds(n, t, t, False)


def complete_margins(n: int, t: int, dropout: float, corrupt: float, failure_log2: float,
                     security_log2: float, malicious: bool = False) -> PlusParameters:
    """The complete graph over n devices at threshold t, with its real margins: abort
    (fewer than t survivors) and share secrecy (collusion; with a malicious server also
    equivocation), and whether both reach their targets. No connectivity bound: a
    complete graph cannot disconnect."""
    k = n - 1
    fail, sec = -abort_log2(n, k, t, dropout), -_security_log2(n, k, t, corrupt, malicious)
    return PlusParameters(n, k, t, fail, sec, fail >= failure_log2 and sec >= security_log2)


def _complete_fallback(n: int, dropout: float, corrupt: float, failure_log2: float,
                       security_log2: float, malicious: bool = False) -> PlusParameters:
    """No sparse graph works: the complete graph, with the t maximising the weaker margin."""
    k = n - 1

    def margins(t: int) -> tuple[float, float]:
        return -abort_log2(n, k, t, dropout), -_security_log2(n, k, t, corrupt, malicious)

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
    if malicious:
        # Below a majority the consistency check proves nothing even with no corrupt
        # device (two disjoint halves can each back a different story), so a lying
        # server could unmask one device. Keep the majority; pay in aborts instead.
        t = max(t, (k + 1) // 2 + 1)
    return complete_margins(n, t, dropout, corrupt, failure_log2, security_log2, malicious)
