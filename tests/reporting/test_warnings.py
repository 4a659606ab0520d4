"""Weakened guarantees and fallbacks become one plain line each."""

from __future__ import annotations

import pytest

from fedactors.reporting.warnings import run_warnings


def warnings_of(*args, **kwargs) -> list[str]:
    """``run_warnings`` without a seeded DP or secure run's caveat (tested on its own below),
    which every call here with the default randomness would otherwise carry."""
    return [w for w in run_warnings(*args, **kwargs) if "came from the seed" not in w]


def test_each_weakened_guarantee_and_fallback_is_one_line() -> None:
    rows = [
        {"round": 1, "secagg_below_target": 1, "secagg_failure_log2": 11.4,
         "secagg_security_log2": 20.4},
        {"round": 2, "secagg_below_target": 1, "secagg_failure_log2": 9.0,
         "secagg_security_log2": 30.0, "noise_shares_below_minimum": 1.0},
        {"round": 3, "secagg_below_target": 0},
    ]
    privacy = {"violations": ["availability: not a uniform sample"]}
    lines = warnings_of(rows, privacy, "BatchNormalization is not vectorized")
    assert len(lines) == 4 and all("\n" not in line for line in lines)
    executor, secagg, shares, violation = lines
    assert executor.startswith("executor:") and "BatchNormalization" in executor
    # The worst round is quoted: the smallest exponents are the weakest bounds.
    assert "in 2 of 3 rounds" in secagg and "2^-9.0" in secagg and "2^-20.4" in secagg
    assert shares.startswith("privacy:") and "in 1 of 3 rounds" in shares
    assert violation == "privacy: availability: not a uniform sample"


def test_a_run_that_kept_every_guarantee_has_no_warnings() -> None:
    assert run_warnings([{"round": 1, "secagg_below_target": 0}], {"violations": []}, None,
                        randomness="system")[1:] == []
    assert run_warnings([{"round": 1}], None, None) == []  # no DP, no secrets: nothing to caveat


@pytest.mark.parametrize("privacy, secure, names", [
    ({"violations": []}, None, ("DP noise", "remove the noise", "the ε describes")),
    (None, {"mode": "real"}, ("secure-aggregation secrets", "unmask the updates",
                              "secure aggregation describes")),
    ({"violations": []}, {"mode": "real"},
     ("DP noise and secure-aggregation secrets", "remove the noise and unmask",
      "the ε and secure aggregation describe ")),
])
def test_a_seeded_dp_or_secure_run_says_the_seed_undoes_its_protection(privacy, secure,
                                                                        names) -> None:
    """Found from outside: a seeded DP run reported "every guarantee the run states held"
    beside the seed that removes its noise (README, privacy.md)."""
    lines = run_warnings([{"round": 1}], privacy, None, randomness="seeded", secure=secure)
    seeded = [line for line in lines if line.startswith("randomness:")]
    assert len(seeded) == 1 and all(name in seeded[0] for name in names), seeded
    assert "--system-randomness" in seeded[0]
    system = run_warnings([{"round": 1}], privacy, None, randomness="system", secure=secure)
    assert not any("came from the seed" in line for line in system)


@pytest.mark.parametrize("accounting, noisy", [
    ({"noise_multiplier": 0.0, "noise_multipliers_charged": [[0.0, 20]]}, False),
    ({"noise_multiplier": 0.0}, False),
    ({"noise_multipliers_charged": [[0.0, 3], [1.1, 2]]}, True),  # adaptive: some noise
    ({"noise_multiplier": 0.5}, True),
    ({}, True),  # a mechanism that does not say: the caveat stays
])
def test_dp_without_noise_has_no_noise_to_caveat(accounting, noisy) -> None:
    # Found from outside: noise_multiplier 0 (ε = ∞, no noise at all) was told its noise
    # came from the seed.
    privacy = {"epsilon": None, "violations": [], "accounting": accounting}
    lines = run_warnings([{"round": 1}], privacy, None, randomness="seeded")
    assert any("DP noise came from the seed" in line for line in lines) == noisy
    # and a run with no noise says it has no privacy (an audit found it silent)
    assert any("added no noise" in line for line in lines) == (not noisy)


def test_a_broken_sampling_assumption_names_the_epsilon_that_holds() -> None:
    privacy = {"epsilon": 1.169, "epsilon_guaranteed": 13.76, "target_epsilon": 1.5,
               "violations": ["availability: ..."], "accounting": {"noise_multiplier": 3.0}}
    lines = [w for w in warnings_of([{"round": 1}], privacy, None) if "epsilon_guaranteed" in w]
    assert len(lines) == 1
    assert "ε = 1.169 assumes the uniform sampling" in lines[0] and "is 13.76" in lines[0]
    assert "target ε 1.5 was kept on the sampled figure" in lines[0]
    del privacy["epsilon_guaranteed"]
    assert not [w for w in warnings_of([{"round": 1}], privacy, None) if "epsilon_guaranteed" in w]


def test_rounds_that_could_not_select_what_was_asked_say_so() -> None:
    # Found from outside: 26,000 to select on a fleet with ~10,300 online, cut silently.
    rows = [{"round": 1, "selected": 10308}, {"round": 2, "selected": 26000},
            {"round": 3, "selected": 10256}]
    lines = [w for w in run_warnings(rows, None, None, selection=(26000, "fixed_size"))
             if w.startswith("selection:")]
    assert lines == ["selection: in 2 of 3 rounds fewer devices were online (or eligible) than "
                     "the 26000 to select (ceil(cohort_size x over_selection)), so every one "
                     "of them was selected (as few as 10256)"]
    full = [{"round": 1, "selected": 650}, {"round": 2, "selected": 650}]
    assert not [w for w in run_warnings(full, None, None, selection=(650, "fixed_size"))
                if w.startswith("selection:")]


def test_poisson_rounds_far_below_their_expected_draw_say_so() -> None:
    def said(counts, wanted=650):
        rows = [{"round": i, "selected": c} for i, c in enumerate(counts, 1)]
        return [w for w in run_warnings(rows, None, None, selection=(wanted, "poisson"))
                if w.startswith("selection:")]

    assert said([200, 245, 230])  # a third of the fleet online
    assert not said([640, 655, 700, 610])  # a Poisson draw's own spread
    assert not said([3, 9, 5], wanted=6)  # small draws vary a lot: no alarm


def test_updates_refused_for_their_contents_are_said() -> None:
    rows = [{"round": 1, "rejected_nonfinite": 1, "rejected_late": 4},
            {"round": 2, "rejected_outlier": 2, "rejected_nonfinite": 0}, {"round": 3}]
    lines = [w for w in warnings_of(rows, None, None) if w.startswith("screening:")]
    assert lines == ["screening: in 2 of 3 rounds the server refused updates for their contents "
                     "(nonfinite 1, outlier 2); their devices took part with no update "
                     "(rejected_* in metrics.jsonl, update.<reason> events name them)"]
    late_only = [{"round": 1, "rejected_late": 4, "rejected_stale": 2}]
    assert not [w for w in warnings_of(late_only, None, None) if w.startswith("screening:")]


def test_modeled_secure_aggregation_has_no_secrets_to_caveat() -> None:
    lines = run_warnings([{"round": 1}], None, None, secure={"mode": "modeled", "proves": "x"})
    assert not any(line.startswith("randomness:") for line in lines)


def test_system_randomness_is_said_since_the_seed_no_longer_replays_the_run() -> None:
    lines = run_warnings([{"round": 1}], None, None, randomness="system")
    assert lines == ["randomness: DP noise and secure-aggregation secrets came from the operating "
                     "system, so this run cannot be reproduced from its seed"]
    assert run_warnings([{"round": 1}], None, None, randomness="seeded") == []


def test_many_canaries_per_release_are_warned_about():
    # Found from outside: 75 canaries a round against 10 devices took over adaptive clipping.

    privacy = {"violations": [], "accounting": {"expected_count": 10},
               "empirical": {"epsilon": 1.0}}
    many = warnings_of([{"canaries": 7}, {"canaries": 9}], privacy, None)
    few = warnings_of([{"canaries": 1}, {"canaries": 0}], privacy, None)
    assert [w for w in many if w.startswith("canaries:")] and "8.0" in " ".join(many)
    assert not [w for w in few if w.startswith("canaries:")]
    assert not [w for w in warnings_of([{"canaries": 9}], {"violations": []}, None)
                if w.startswith("canaries:")]
    # The rule is on k q, the design: a run whose canaries happened not to join is told too.
    design = {**privacy, "empirical": {"epsilon": 1.0, "canaries_inserted": 3,
                                       "participation_rate": 11 / 30}}
    unlucky = warnings_of([{"canaries": 0}, {"canaries": 0}, {"canaries": 2}],
                          {**design, "accounting": {"expected_count": 8}}, None)
    assert [w for w in unlucky if w.startswith("canaries: about 1.1 canaries join")]
    roomy = {**design, "accounting": {"expected_count": 20}}  # 1.1 of 20: under a tenth
    assert not [w for w in warnings_of([{"canaries": 0}], roomy, None) if w.startswith("canaries:")]


def test_an_estimate_above_the_canary_bound_is_warned_about():
    # Found from outside: 20 canaries, 4 participations, estimate 3.50 against a bound of 0.07
    # for a canary, said nowhere but in docs/privacy.md.

    def warned(epsilon, bound):
        privacy = {"violations": [], "accounting": {"expected_count": 50},
                   "empirical": {"epsilon": epsilon, "epsilon_canary_bound": bound,
                                 "canaries_inserted": 20}}
        return [w for w in warnings_of([{"canaries": 1}], privacy, None)
                if w.startswith("canaries:")]

    (above,) = warned(3.5, 0.0708)
    assert "3.5 is above" in above and "(0.0708)" in above and "20 canaries" in above
    assert "privacy.epsilon is the guarantee" in above and "\n" not in above
    assert warned(0.0708, 0.0708) == [] and warned(0.05, 0.0708) == []
    assert warned(None, 0.0708) == [] and warned(3.5, None) == []


def test_a_skellam_grid_too_coarse_for_the_model_is_warned_about():
    # Found from outside: scale_bits=0 on 1,283 weights made the noise ~19x the 16-bit run's.

    def privacy(l2: float) -> dict:
        return {"violations": [], "accounting": {
            "mechanism": "distributed-skellam", "clip_norm": 1.0, "scale_bits": 2,
            "dim": 1283, "l2_sensitivity_integer": l2}}

    coarse = [w for w in warnings_of([], privacy(4.0 * 9), None) if w.startswith("skellam:")]
    fine = [w for w in warnings_of([], privacy(4.0 * 1.2), None) if w.startswith("skellam:")]
    assert coarse and "9.0x" in coarse[0] and "scale_bits=2" in coarse[0]
    assert not fine


def test_a_modeled_secure_run_says_it_proves_no_secrecy_and_a_real_one_says_nothing() -> None:
    from fedactors import SecureAggregation

    modeled = SecureAggregation(mode="modeled").describe()
    (line,) = warnings_of([{"round": 1}], None, None, secure=modeled)
    assert line.startswith("secure aggregation ran modeled") and "not secrecy" in line
    assert warnings_of([{"round": 1}], None, None, secure=SecureAggregation().describe()) == []


def test_a_bound_above_one_is_said_to_bound_nothing_and_aborted_rounds_are_counted() -> None:
    rows = [{"round": 1, "secagg_below_target": 1, "secagg_failure_log2": -2.0,
             "secagg_security_log2": 3.5, "secagg_aborted": 1},
            {"round": 2, "secagg_below_target": 0, "secagg_aborted": 0}]
    secagg, aborted = warnings_of(rows, None, None)
    assert "2^--" not in secagg and "abort probability not bounded below 1" in secagg
    assert "a lying server up to 2^-3.5" in secagg
    assert aborted.startswith("secure aggregation: 1 of 2 rounds aborted (fewer than t "
                              "survivors somewhere, or fewer masked inputs than the sum's floor)")


def test_more_protocol_dropout_than_assumed_is_said() -> None:
    secure = {"mode": "real", "max_dropout": 0.1, "proves": "..."}
    rows = [{"round": 1, "secagg_advertised": 20, "secagg_survivors": 19},  # 5%: fine
            {"round": 2, "secagg_advertised": 20, "secagg_survivors": 11},  # 45%
            {"round": 3, "secagg_advertised": 0, "secagg_survivors": 0},
            # Aborted: no survivors because of the abort, not 100% dropout.
            {"round": 4, "secagg_advertised": 20, "secagg_survivors": 0, "secagg_aborted": 1}]
    line, aborted = warnings_of(rows, None, None, secure=secure)
    assert aborted.startswith("secure aggregation: 1 of 4 rounds aborted")
    assert "in 1 of 4 rounds more than max_dropout=0.1" in line and "up to 45%" in line
    rows[1]["secagg_survivors"] = 18
    assert not [w for w in warnings_of(rows, None, None, secure=secure) if "max_dropout" in w]


def test_distributed_noise_without_secure_aggregation_is_said_to_show_the_server_more() -> None:
    privacy = {"accounting": {"distributed_noise_min_survivors": 10}, "violations": []}
    lines = [w for w in warnings_of([], privacy, None) if "distributed noise" in w]
    assert len(lines) == 1 and "not what the server saw" in lines[0]
    secure = {"mode": "real", "server": "honest-but-curious"}
    assert not [w for w in warnings_of([], privacy, None, secure=secure)
                if "distributed noise" in w]
    central = {"accounting": {"distributed_noise_min_survivors": None}, "violations": []}
    assert not [w for w in warnings_of([], central, None) if "distributed noise" in w]


@pytest.mark.parametrize("graph, server, risks", [
    ("complete", "honest-but-curious", "share collusion up to"),
    ("sparse", "honest-but-curious", "share collusion or disconnection up to"),
    ("complete", "malicious", "share collusion or a lying server up to"),
    ("auto", "malicious", "share collusion, disconnection or a lying server up to"),
])
def test_a_missed_security_target_names_only_the_risks_the_option_has(graph, server,
                                                                        risks) -> None:
    rows = [{"round": 1, "secagg_below_target": 1, "secagg_failure_log2": 30.0,
             "secagg_security_log2": 12.0}]
    secure = {"mode": "real", "graph": graph, "server": server}
    (line,) = [w for w in warnings_of(rows, None, None, secure=secure) if "missed" in w]
    assert f", {risks} 2^-12.0)" in line


def test_threshold_fraction_is_blamed_only_when_it_was_set() -> None:
    rows = [{"round": 1, "secagg_below_target": 1, "secagg_failure_log2": 3.0,
             "secagg_security_log2": 50.0}]

    def line(**secure):
        return next(w for w in warnings_of(rows, None, None, secure={"mode": "real", **secure})
                    if "missed" in w)

    assert "threshold_fraction" not in line(graph="sparse", threshold_fraction=None)
    assert "threshold_fraction set t" in line(graph="complete", threshold_fraction=0.5)


@pytest.mark.parametrize("delta,population,warned", [
    (0.5, 12, True), (1 / 12, 12, True), (0.08, 12, False), (1e-5, 1000, False),
])
def test_a_delta_of_one_over_n_or_more_is_warned_about(delta, population, warned) -> None:
    privacy = {"delta": delta, "accounting": {"population": population}, "violations": []}
    lines = warnings_of([{"round": 1}], privacy, None)
    assert bool(lines) == warned
    if warned:
        (line,) = lines
        assert line.startswith(f"privacy: δ={delta:g} is not below 1/N (N = {population}")


def test_rounds_where_a_robust_stage_gave_less_than_its_rule_are_warned_about() -> None:
    rows = [{"round": 1, "krum_guaranteed": 1.0}, {"round": 2, "krum_guaranteed": 0.0},
            {"round": 3}]  # skipped: nothing aggregated, nothing to say
    (line,) = warnings_of(rows, None, None)
    assert line.startswith("robust: in 1 of 3 rounds Krum had fewer than 2f + 3 updates")
    rows = [{"round": 1, "trimmed_each_side": 0.0}, {"round": 2, "trimmed_each_side": 0.0},
            {"round": 3, "trimmed_each_side": 2.0}]
    (line,) = warnings_of(rows, None, None)
    assert line.startswith("robust: in 2 of 3 rounds TrimmedMean trimmed nothing")
    assert warnings_of([{"round": 1, "krum_guaranteed": 1.0, "trimmed_each_side": 1.0}],
                        None, None) == []


def test_a_risk_assumed_away_is_zero_not_two_to_the_minus_infinity() -> None:
    rows = [{"round": 1, "secagg_below_target": 1, "secagg_failure_log2": 3.0,
             "secagg_security_log2": float("inf")}]
    (line,) = warnings_of(rows, None, None)
    assert "inf" not in line and "abort probability up to 2^-3.0" in line and " 0)" in line


def test_rounds_skipped_below_min_reports_are_counted() -> None:
    rows = [{"round": 1, "below_min_reports": 1}, {"round": 2}, {"round": 3, "below_min_reports": 1}]
    (line,) = warnings_of(rows, None, None)
    assert line.startswith("rounds: 2 of 3 rounds were skipped")
