"""What a run must tell its user it weakened or fell back on, one line each.

Collected from what the run wrote (its metrics rows and privacy block), so the
same lines go to the terminal at the end of the run (under ``--quiet`` too),
into ``summary.json`` ``warnings`` and into the report.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

from fedactors.seeding import SEEDED, SYSTEM


def run_warnings(records: Sequence[Mapping[str, Any]], privacy: Optional[Mapping[str, Any]],
                 executor_fallback: Optional[str], *, randomness: str = SEEDED,
                 secure: Optional[Mapping[str, Any]] = None,
                 selection: Optional[tuple[int, str]] = None) -> list[str]:
    """Every weakened guarantee and fallback of a finished run, in plain words.

    ``selection``: synchronous rounds' ``(selected_size, sampling)``, to say when
    rounds could not select what the scenario asks for.
    """
    out: list[str] = []
    if selection is not None:
        out += _selection_warnings(records, *selection)
    out += _content_refusals(records)
    if secure is not None and secure.get("mode") == "modeled":
        out.append(f"secure aggregation ran modeled: {secure['proves']}")
    if secure is not None:
        out += _dropout_warnings(records, secure)
    accounting = (privacy or {}).get("accounting") or {}
    if secure is None and accounting.get("distributed_noise_min_survivors"):
        # Legitimate (the released model's ε holds) but rarely what was meant: the point
        # of device-added noise is a server that sees only the sum.
        out.append(
            "privacy: distributed noise without secure aggregation: the server saw each "
            "device's update carrying only its share of the noise (1/min_survivors of the "
            "variance); the ε covers the released model, not what the server saw"
        )
    if randomness == SEEDED and (_has_noise(privacy) or _has_secrets(secure)):
        out.append(_seeded_secrets(_has_noise(privacy), _has_secrets(secure)))
    if privacy is not None and not _has_noise(privacy):
        out.append("privacy: the DP stage added no noise (noise multiplier 0), so no ε holds "
                   "(epsilon null, ∞): the run is clipped, not private")
    if privacy is not None and "epsilon_guaranteed" in privacy:
        out.append(_guaranteed_warning(privacy))
    if randomness == SYSTEM:
        # Asked for, but it gives up what every other run promises: a replay from its seed.
        out.append("randomness: DP noise and secure-aggregation secrets came from the operating "
                   "system, so this run cannot be reproduced from its seed")
    if executor_fallback:
        out.append(f"executor: cohorts were trained one device at a time ({executor_fallback})")
    below = [r for r in records if r.get("secagg_below_target")]
    if below:
        failure = min(r["secagg_failure_log2"] for r in below)
        security = min(r["secagg_security_log2"] for r in below)
        out.append(
            f"secure aggregation: in {len(below)} of {len(records)} rounds the graph's (k, t) "
            f"missed the stated targets (abort probability {_bound(failure)}, "
            f"{_security_risks(secure)} {_bound(security)}); under the stated dropout and "
            "corruption the cohort was too small for them"
            + (", or threshold_fraction set t outside the range that meets them"
               if secure is not None and secure.get("threshold_fraction") is not None else "")
        )
    aborted = sum(1 for r in records if r.get("secagg_aborted"))
    if aborted:
        out.append(f"secure aggregation: {aborted} of {len(records)} rounds aborted (fewer than "
                   "t survivors somewhere, or fewer masked inputs than the sum's floor) and "
                   "left the model as it was")
    zeroed = [r["nonfinite_zeroed"] for r in records if r.get("nonfinite_zeroed")]
    if zeroed:
        out.append(
            f"clipping: in {len(zeroed)} of {len(records)} rounds {sum(zeroed)} reported "
            "updates in all were not finite (NaN or inf) and the clipping stage zeroed them: "
            "those devices took part with no update (nonfinite_zeroed in metrics.jsonl)"
        )
    withheld = [r["nonfinite_withheld"] for r in records if r.get("nonfinite_withheld")]
    if withheld:
        out.append(
            f"secure aggregation: in {len(withheld)} of {len(records)} rounds "
            f"{sum(withheld)} devices in all had a non-finite update (NaN or inf) and kept "
            "out of the protocol; they are counted as dropped (nonfinite_withheld in "
            "metrics.jsonl)"
        )
    skipped = sum(1 for r in records if r.get("below_min_reports"))
    if skipped:
        out.append(f"rounds: {skipped} of {len(records)} rounds were skipped, the model left as "
                   "it was: fewer updates than rounds.min_reports were accepted (some may have "
                   "come and been refused: see refused and rejected_* in metrics.jsonl)")
    short = sum(1 for r in records if r.get("noise_shares_below_minimum"))
    if short:
        out.append(
            f"privacy: in {short} of {len(records)} rounds fewer distributed-noise shares than "
            "min_survivors arrived, so nothing was released (the rounds were still charged)"
        )
    out += _robust_warnings(records)
    if privacy is not None:
        out += _delta_warnings(privacy)
        out += [f"privacy: {v}" for v in privacy.get("violations", ())]
        out += _canary_warnings(records, privacy)
        out += _skellam_warnings(privacy)
    return out


#: A robust stage's measurement that is 0 in a round where the stage's rule gave nothing,
#: and what that round was instead.
ROBUST_SHORTFALLS = (
    ("krum_guaranteed", "Krum had fewer than 2f + 3 updates, so its bound on what f "
                        "attackers can do did not hold"),
    ("trimmed_each_side", "TrimmedMean trimmed nothing (beta times the updates was below 1): "
                          "those rounds took the plain mean, which one attacker can move "
                          "arbitrarily"),
)


def _robust_warnings(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Rounds in which a robust stage gave less than its rule promises (rounds with no
    aggregation carry no measurement and are not counted)."""
    out = []
    for key, what in ROBUST_SHORTFALLS:
        short = sum(1 for r in records if key in r and not r[key])
        if short:
            out.append(f"robust: in {short} of {len(records)} rounds {what} ({key} 0 in "
                       "metrics.jsonl)")
    return out


#: The screen's refusals for what an update holds (``fedactors.server.screening``), as
#: opposed to when or from whom it came.
CONTENT_REASONS = ("malformed", "nonfinite", "out_of_bounds", "outlier")


def _content_refusals(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Updates the server refused for their contents (found from outside: a device whose
    own data held a NaN sent a non-finite update every time it was picked, refused with
    nothing said but a count in metrics.jsonl)."""
    totals = {reason: sum(int(r.get(f"rejected_{reason}") or 0) for r in records)
              for reason in CONTENT_REASONS}
    rounds = sum(1 for r in records
                 if any(r.get(f"rejected_{reason}") for reason in CONTENT_REASONS))
    if not rounds:
        return []
    which = ", ".join(f"{reason} {n}" for reason, n in totals.items() if n)
    return [f"screening: in {rounds} of {len(records)} rounds the server refused updates for "
            f"their contents ({which}); their devices took part with no update "
            "(rejected_* in metrics.jsonl, update.<reason> events name them)"]


def _selection_warnings(records: Sequence[Mapping[str, Any]], wanted: int,
                        sampling: str) -> list[str]:
    """Rounds that selected fewer devices than ``ceil(cohort_size x over_selection)``
    because fewer were online (found from outside: a cohort of 26,000 on a fleet with
    10,300 online at night was cut to everyone online, said nowhere)."""
    counts = [int(r["selected"]) for r in records if "selected" in r]
    if not counts:
        return []
    if sampling == "poisson":
        # A Poisson draw varies; its mean over the rounds should be near the whole fleet's
        # expectation. Far below it, the fleet was mostly offline (or kept out).
        mean = sum(counts) / len(counts)
        spread = 4.0 * math.sqrt(wanted / len(counts))
        if mean < 0.9 * wanted and mean < wanted - spread:
            return [f"selection: rounds sampled {mean:.1f} devices on average, against the "
                    f"{wanted} a Poisson draw of the whole fleet expects: much of the fleet was "
                    "offline or kept out (a DPMean still divides by its expected_count, so "
                    "there each update moved the model less)"]
        return []
    short = [c for c in counts if c < wanted]
    if not short:
        return []
    return [f"selection: in {len(short)} of {len(counts)} rounds fewer devices were online (or "
            f"eligible) than the {wanted} to select (ceil(cohort_size x over_selection)), so "
            f"every one of them was selected (as few as {min(short)})"]


def _has_secrets(secure: Optional[Mapping[str, Any]]) -> bool:
    """Whether the run's secure aggregation ran the real protocol (a modeled one has no
    secrets, and says so in its own warning)."""
    return secure is not None and secure.get("mode") != "modeled"


def _has_noise(privacy: Optional[Mapping[str, Any]]) -> bool:
    """Whether the run's DP added any noise (found from outside: noise_multiplier 0, so
    no noise and ε = ∞, still got the seeded-noise caveat). Unknown counts as noise."""
    if privacy is None:
        return False
    accounting = privacy.get("accounting") or {}
    charged = accounting.get("noise_multipliers_charged")
    if charged:
        return any(z > 0 for z, _ in charged)
    z = accounting.get("noise_multiplier")
    return z is None or z > 0


def _guaranteed_warning(privacy: Mapping[str, Any]) -> str:
    """The ε a synchronous run states assumes a sampling it broke: say what holds."""
    def text(eps: Optional[float]) -> str:
        return "∞" if eps is None else f"{eps:.4g}"

    target = privacy.get("target_epsilon")
    kept = (f"; the target ε {target:g} was kept on the sampled figure, not on this one"
            if target is not None else "")
    holds = privacy["epsilon_guaranteed"]
    what = (f"the ε that holds with no sampling assumed is {text(holds)} (epsilon_guaranteed)"
            if holds is not None else
            "no finite ε holds (epsilon_guaranteed null: a Poisson round that released nothing "
            "did so because of how many took part)")
    return (f"privacy: ε = {text(privacy.get('epsilon'))} assumes the uniform sampling this run "
            f"broke (see the violations); {what}{kept}")


def _seeded_secrets(dp: bool, secure: bool) -> str:
    """The default, seeded run's caveat: its ε and masks are the simulated mechanism's,
    not a protection of its outputs, since the seed replays the noise and the secrets."""
    what = " and ".join(w for w, on in (("DP noise", dp), ("secure-aggregation secrets", secure))
                        if on)
    undo = " and ".join(w for w, on in (("remove the noise", dp), ("unmask the updates", secure))
                        if on)
    claim = " and ".join(w for w, on in (("the ε", dp), ("secure aggregation", secure)) if on)
    return (f"randomness: the {what} came from the seed, so anyone who knows it can {undo}: "
            f"{claim} describe{'s' if ' and ' not in claim else ''} the simulated mechanism, "
            "not a protection of this run's outputs (--system-randomness draws them from the "
            "operating system)")


def _delta_warnings(privacy: Mapping[str, Any]) -> list[str]:
    """A δ of 1/N or more: the (ε, δ) stated holds, but says little.

    A mechanism that publishes one of the N devices' data outright, chosen at
    random, is (0, 1/N)-DP; so δ must be well below 1/N for the guarantee to
    rule that out (the default δ is, docs/privacy.md).
    """
    delta, population = privacy.get("delta"), privacy.get("accounting", {}).get("population")
    if not delta or not population or delta * population < 1:
        return []
    return [f"privacy: δ={delta:g} is not below 1/N (N = {population} devices): an (ε, δ) "
            "guarantee at that δ allows releasing some device's data outright; choose δ well "
            "below 1/N (Privacy(delta=None) takes the default)"]


#: Rounding to the Skellam grid may inflate the sensitivity by this factor before it is said.
SKELLAM_INFLATION = 1.5


def _skellam_warnings(privacy: Mapping[str, Any]) -> list[str]:
    """A grid too coarse for the model: rounding, not the clip, sets the noise."""
    acc = privacy.get("accounting", {})
    if acc.get("mechanism") != "distributed-skellam":
        return []
    clip = acc["clip_norm"] * 2.0 ** acc["scale_bits"]
    inflation = acc["l2_sensitivity_integer"] / clip
    if inflation <= SKELLAM_INFLATION:
        return []
    return [f"skellam: rounding {acc['dim']} weights to the grid of scale_bits="
            f"{acc['scale_bits']} made one device's L2 sensitivity {inflation:.1f}x its clip, and "
            f"the noise is sized for that: {inflation:.1f}x what the same ε would need on a "
            "finer grid; raise scale_bits"]


#: Canaries per release above this share of the cohort steer the run (docs/privacy.md).
CANARY_SHARE = 0.1


def _canary_warnings(records: Sequence[Mapping[str, Any]],
                     privacy: Mapping[str, Any]) -> list[str]:
    """Canaries are extra clients: many per release change the run they estimate; and an
    estimate above what the accountant proves for a canary means it cannot be trusted."""
    empirical, cohort = privacy.get("empirical"), privacy.get("accounting", {}).get("expected_count")
    if not empirical:
        return []
    out = []
    per_release = [r["canaries"] for r in records if "canaries" in r]
    mean = sum(per_release) / len(per_release) if per_release else 0.0
    k, q = empirical.get("canaries_inserted"), empirical.get("participation_rate")
    # The design's k q, as docs/privacy.md states the rule (found from outside: with k q
    # above the line, the few canaries a short run happened to draw kept it quiet).
    expected = k * q if k is not None and q is not None else mean
    if cohort and max(expected, mean) > CANARY_SHARE * cohort:
        out.append(
            f"canaries: about {max(expected, mean):.1f} canaries join each release (k x q; "
            f"{mean:.1f} did on average) against a cohort of {cohort} devices, so they steer "
            f"training (and an adaptive clip) away from the run without them; the estimate "
            f"describes that run. Keep canaries x rate under {CANARY_SHARE:g} x the cohort")
    eps, bound = empirical.get("epsilon"), empirical.get("epsilon_canary_bound")
    if eps is not None and bound is not None and eps > bound:
        out.append(
            f"canaries: the empirical estimate {eps:.3g} is above what the accountant proves "
            f"for a canary ({bound:.3g}), so it measures the noise of fitting "
            f"{empirical.get('canaries_inserted')} canaries' spread (use 1,000 or more: "
            f"docs/privacy.md) or a run that does not add the noise it accounts for; "
            f"privacy.epsilon is the guarantee")
    return out


def _bound(log2_margin: float) -> str:
    """A union bound 2^-margin in words; at or below 0 bits it bounds nothing."""
    if log2_margin <= 0:
        return "not bounded below 1 (no guarantee)"
    if log2_margin == float("inf"):  # nothing assumed to go wrong (max_corrupt=0, say)
        return "0"
    return f"up to 2^-{log2_margin:.1f}"


def _dropout_warnings(records: Sequence[Mapping[str, Any]],
                      secure: Mapping[str, Any]) -> list[str]:
    """Rounds in which more devices dropped out of the protocol than (k, t) assumed."""
    assumed = secure.get("max_dropout")
    if assumed is None:
        return []
    # Of those that advertised keys, the share missing from the sum: a floor on the
    # dropout the bounds assumed (training failures before the keys are not counted).
    # An aborted round has no survivors whoever dropped; its own warning counts it.
    seen = [1.0 - r["secagg_survivors"] / r["secagg_advertised"] for r in records
            if r.get("secagg_advertised") and not r.get("secagg_aborted")]
    over = [d for d in seen if d > assumed]
    if not over:
        return []
    return [f"secure aggregation: in {len(over)} of {len(records)} rounds more than "
            f"max_dropout={assumed:g} of the devices that advertised keys dropped out "
            f"(up to {max(over):.0%}); the abort and security bounds assumed at most "
            f"{assumed:.0%}"]


def _security_risks(secure: Optional[Mapping[str, Any]]) -> str:
    """What the security margin bounds for this option: share collusion always; graph
    disconnection only where a sparse graph can be used; a lying server only when one is
    assumed (its equivocation bound)."""
    risks = ["share collusion"]
    if secure is None or secure.get("graph") != "complete":
        risks.append("disconnection")
    if secure is None or secure.get("server") == "malicious":
        risks.append("a lying server")
    return ", ".join(risks[:-1]) + " or " + risks[-1] if len(risks) > 1 else risks[0]
