"""The combination matrix: every mode × aggregator × secure aggregation × executor.

Each combination is either refused when the scenario is built, with one
ConfigError naming the fields that conflict, or it runs two rounds of real
training and every guarantee its outputs state is true:

* ε is reported, positive and enforced exactly when the aggregator chain
  declares a DP release (and never otherwise);
* under secure aggregation no plaintext ``Update`` is ever sent to the
  server, and the ``secagg_*`` metrics are there;
* a run resumed part-way ends with the same weights as an uninterrupted one
  (synchronous: after round 1; FedBuff: from its checkpoint at the end of the
  first update's instant, after a stop at the second).

The DP rows built on the newer mechanisms state more, and that is checked too:

* DP-FTRL (``DPMean.tree``, with a restart every release, with
  ``Privacy(min_separation=1)``, and wrapped in ``Clipped``): ``epsilon`` is
  the planned bound recomputed here by brute force from the releases made,
  ``epsilon_observed_participation`` the bound for the contributors read from
  the run's events, no contributor appears twice within ``min_separation``
  releases, and ``assumption_held`` is true exactly when no release was
  skipped;
* Skellam (``DPMean.skellam``): refused without secure aggregation, and where it
  runs every release is charged at the shares really summed and ``epsilon``
  is the composition of those charges, recomputed here.

Apart from the matrix: Poisson sampling, dropouts that abort a secure round,
canaries in every cell of the matrix (refused at load but for synchronous
rounds with a central-noise DPMean) and system randomness.

The table in docs/combinations.md states the same rules; a test below reads
it so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import keras
import numpy as np
import pytest

from fedactors import (
    DeviceClass,
    FedBuff,
    Krum,
    LocalTraining,
    Privacy,
    Rounds,
    Scenario,
    SecureAggregation,
    TrimmedMean,
    WeightedMean,
)
from fedactors.aggregation.base import Aggregator
from fedactors.aggregation.clipping import Clipped
from fedactors.data.federated import FederatedData
from fedactors.errors import ConfigError
from fedactors.messages import Update
from fedactors.privacy.accounting import RDP_ORDERS
from fedactors.privacy.budget import PrivacyBudget
from fedactors.privacy.dp_mean import DPMean
from fedactors.privacy.participation import Participation
from fedactors.runtime import checkpoint
from fedactors.runtime.network import Network
from fedactors.secagg.envelopes import MASKED
from fedactors.simulation import RunOptions, run_scenario
from tests.privacy.test_tree_accounting import brute_epsilon
from tests.server.test_min_separation import fewest_between

DEVICES, COHORT, Z = 8, 4, 2.0
ROOT = Path(__file__).resolve().parents[2]

MODES: dict[str, Optional[FedBuff]] = {
    "sync": None,
    "fedbuff": FedBuff(buffer_size=COHORT, concurrency=6),
}
AGGREGATORS: dict[str, Callable[[], Aggregator]] = {
    "weighted-mean": WeightedMean,
    "clipped-mean": lambda: Clipped(1.0, WeightedMean(weighted=False)),
    "dp-fixed": lambda: DPMean.fixed(1.0, Z, COHORT),
    "dp-adaptive": lambda: DPMean.adaptive_clipping(1.0, Z, COHORT),
    "dp-distributed": lambda: DPMean.fixed(1.0, Z, COHORT, distributed_noise=True,
                                           min_survivors=COHORT - 1),
    "clipped-dp": lambda: Clipped(0.5, DPMean.fixed(1.0, Z, COHORT)),
    "trimmed-mean": lambda: TrimmedMean(0.25),
    "krum": lambda: Krum(f=1),
    # DP-FTRL: one tree; a new tree every release; a separation of 1 release; wrapped.
    "dp-ftrl": lambda: DPMean.tree(1.0, Z, COHORT),
    "dp-ftrl-restart": lambda: DPMean.tree(1.0, Z, COHORT, restart_every=1),
    "dp-ftrl-sep": lambda: DPMean.tree(1.0, Z, COHORT),
    "clipped-ftrl": lambda: Clipped(0.5, DPMean.tree(1.0, Z, COHORT, efficient=False)),
    # Distributed Skellam noise; secure aggregation's default scale_bits is 16 too.
    "dp-skellam": lambda: DPMean.skellam(1.0, Z, COHORT, min_survivors=COHORT - 1,
                                         scale_bits=16),
}
#: The privacy options a row comes with (min_separation is DP-FTRL's, in Privacy).
PRIVACY: dict[str, Privacy] = {"dp-ftrl-sep": Privacy(min_separation=1)}
#: Each DP-FTRL row's (restart_every, min_separation).
TREES: dict[str, tuple[Optional[int], int]] = {
    "dp-ftrl": (None, 0), "dp-ftrl-restart": (1, 0), "dp-ftrl-sep": (None, 1),
    "clipped-ftrl": (None, 0),
}
SECURE: dict[str, Optional[SecureAggregation]] = {
    "plain": None,
    "secagg": SecureAggregation.complete(),
    "secagg+": SecureAggregation.sparse(),
}
EXECUTORS = ("vectorized", "sequential")
PRIVATE = {"dp-fixed", "dp-adaptive", "dp-distributed", "clipped-dp", *TREES, "dp-skellam"}
INDIVIDUAL = {"trimmed-mean", "krum"}


def expected_refusal(mode: str, aggregator: str, secure: str) -> Optional[tuple[str, ...]]:
    """The two fields a refusal must name, or None if the combination must run."""
    if secure == "plain" and aggregator == "dp-skellam":
        # Each Skellam record carries 1/min_survivors of the noise: the server must not read it
        # (and FedBuff, which has no secure aggregation, is named as the obstacle).
        return ("mode",) if mode == "fedbuff" else ("secure_aggregation",)
    if secure == "plain" and mode == "fedbuff" and aggregator == "dp-distributed":
        # Device-added noise is scaled down with each update by its staleness weight.
        return ("aggregator", "mode")
    if secure == "plain":
        return None
    if mode == "fedbuff":
        return ("secure_aggregation", "mode")
    if aggregator in INDIVIDUAL:
        return ("aggregator", "secure_aggregation")
    if aggregator == "weighted-mean":  # unbounded: no fixed-point range can hold it
        return ("aggregator", "secure_aggregation")
    return None


def _data(fleet, rng: np.random.Generator) -> FederatedData:
    w = np.array([1.0, -2.0, 0.5], np.float32)
    clients = []
    for n in fleet.examples:
        x = rng.normal(size=(int(n), 3)).astype(np.float32)
        clients.append((x, (x @ w > 0).astype(np.int32)))
    xt = rng.normal(size=(60, 3)).astype(np.float32)
    return FederatedData.from_arrays(clients, (xt, (xt @ w > 0).astype(np.int32)))


def _model() -> keras.Model:
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"),
                             keras.layers.Dense(2)])


def build(mode: str, aggregator: str, secure: str, **changes) -> Scenario:
    fields = dict(
        # FedBuff uses only count, deadline and eval_every of Rounds (and refuses the rest).
        rounds=(Rounds(count=2, cohort_size=COHORT, deadline=60.0) if MODES[mode] is None
                else Rounds(count=2, deadline=60.0)),
        mode=MODES[mode],
        privacy=PRIVACY.get(aggregator),
    )
    fields.update(changes)
    return Scenario(
        name=f"combo-{mode}-{aggregator}-{secure}",
        model=_model,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        data=_data,
        # Two speeds, so FedBuff buffers mix staleness and rounds have stragglers to wait for.
        fleet=[DeviceClass("fast", count=DEVICES // 2, compute=40.0, examples=20),
               DeviceClass("slow", count=DEVICES // 2, compute=10.0, examples=20)],
        training=LocalTraining(batch_size=10, optimizer=lambda: keras.optimizers.SGD(0.1)),
        aggregator=AGGREGATORS[aggregator](),
        secure_aggregation=SECURE[secure],
        **fields,
    )


#: Rows whose privacy does not depend on how local training is executed run with one
#: executor (the executor axis is covered by every other row), to keep the suite short.
ONE_EXECUTOR = {"dp-ftrl", "dp-ftrl-restart", "dp-ftrl-sep", "clipped-ftrl", "dp-skellam"}

COMBINATIONS = [
    (m, a, s, e) for m in MODES for a in AGGREGATORS for s in SECURE for e in EXECUTORS
    if e == EXECUTORS[0] or a not in ONE_EXECUTOR
]


@pytest.fixture
def server_mail(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every message any device sends the server, as it is put on the wire."""
    sent: list = []
    original = Network.to_server

    def spy(self, device, message, after=0.0):
        sent.append(message)
        return original(self, device, message, after)

    monkeypatch.setattr(Network, "to_server", spy)
    return sent


@pytest.mark.slow
@pytest.mark.parametrize("mode, aggregator, secure, executor", COMBINATIONS,
                         ids=["-".join(c) for c in COMBINATIONS])
def test_every_combination_is_refused_or_honest(
    mode: str, aggregator: str, secure: str, executor: str, server_mail: list, tmp_path: Path
) -> None:
    refusal = expected_refusal(mode, aggregator, secure)
    if refusal is not None:
        with pytest.raises(ConfigError) as caught:
            build(mode, aggregator, secure)
        message = str(caught.value)
        assert "\n" not in message
        for name in refusal:
            assert name in message, f"{message!r} does not name {name!r}"
        return

    scenario = build(mode, aggregator, secure)
    out = tmp_path / "run"
    result = run_scenario(scenario, RunOptions(out_dir=out, executor=executor, checkpoint=True,
                                               keep_events=True))
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["round"] for r in rows] == [1, 2]

    private = aggregator in PRIVATE
    assert ("privacy" in summary) == private
    assert all(("epsilon" in r) == private for r in rows)
    if private:
        eps = [r["epsilon"] for r in rows]
        assert 0.0 < eps[0] < eps[1]
        assert 0.0 < summary["privacy"]["epsilon"] <= eps[1]
        assert summary["privacy"]["releases"] == ("buffers" if mode == "fedbuff" else "rounds")
        if mode == "fedbuff":  # buffers are no sample: the guarantee has no amplification
            assert summary["privacy"]["accounting"]["sampling"] == "none"
        if aggregator in TREES:
            check_tree(aggregator, summary["privacy"], rows, release_contributors(result.events))
        if aggregator == "dp-skellam":
            check_skellam(summary["privacy"], rows)

    # A 4-device SecAgg+ graph cannot meet the default targets: that is said, not hidden.
    below = any(r.get("secagg_below_target") for r in rows)
    assert below == any(w.startswith("secure aggregation:") for w in summary["warnings"])
    if secure == "secagg+":
        assert below
    if secure != "plain":
        assert server_mail and not any(isinstance(m, Update) for m in server_mail)
        assert all("secagg_survivors" in r and "secagg_modulus_bits" in r for r in rows)
        assert not any(e["event"] == "update.received" for e in result.events)
    else:
        assert any(isinstance(m, Update) for m in server_mail)

    # Resume part-way: the same final weights as the uninterrupted run.
    cut = tmp_path / "cut"
    if mode == "sync":
        run_scenario(scenario, RunOptions(out_dir=cut, executor=executor, rounds=1))
    else:  # stopped at update 2, it resumes from its checkpoint after update 1
        run_scenario(scenario, RunOptions(out_dir=cut, executor=executor, rounds=2),
                     on_round=[lambda row: "interrupted" if row["round"] == 2 else None])
        assert checkpoint.load(cut).round == 1
    resumed = run_scenario(scenario, RunOptions(out_dir=cut, executor=executor, rounds=2,
                                                resume=True))
    assert resumed.summary["weights_sha256"] == summary["weights_sha256"]
    assert (cut / "metrics.jsonl").read_text().count("\n") == 2


def release_contributors(events: list[dict]) -> list[Optional[tuple[int, ...]]]:
    """The devices summed in each release, in release order, read from the run's events:
    updates received (masked inputs, under secure aggregation) up to the round's end or
    the buffer's release; ``None`` for a release the server skipped."""
    releases: list[Optional[tuple[int, ...]]] = []
    pending: list[int] = []
    skipped = False
    for e in events:
        if e["event"] == "update.received" or (
                e["event"] == "secagg.received" and e["step"] == MASKED):
            pending.append(int(e["sender"]))
        elif e["event"] == "round.skipped":
            skipped = True
        elif e["event"] in ("round.end", "buffer.aggregated"):
            releases.append(None if skipped else tuple(sorted(pending)))
            pending, skipped = [], False
    return releases


def tree_spans(releases: int, restart_every: Optional[int]) -> list[tuple[int, int]]:
    """[start, end) release indices (0-based) of each tree."""
    size = restart_every or max(releases, 1)
    return [(s, min(s + size, releases)) for s in range(0, releases, size)]


def check_tree(aggregator: str, p: dict, rows: list[dict],
               contributors: list[Optional[tuple[int, ...]]]) -> None:
    """A DP-FTRL summary against what the run did: ε recomputed by brute force."""
    restart_every, b = TREES[aggregator]
    assert p["accounting"]["mechanism"] == "dp-ftrl-tree-aggregation"
    assert p["accounting"]["min_separation_enforced"] == b
    assert p["accounting"]["restart_every"] == restart_every
    assert len(contributors) == len(rows)
    # Only the releases made are tree leaves.
    leaves = [c for c in contributors if c is not None]
    skipped = len(rows) - len(leaves)
    made = len(leaves)
    assert p["releases_skipped"] == skipped and p["rounds_accounted"] == made
    assert p["assumption_held"] == (skipped == 0) == (not p["violations"])
    # The rule, kept: no device back within b releases.
    gap = fewest_between(leaves)
    assert gap is None or gap >= b
    # The guarantee: every participation the rules allow, in every tree.
    spans = tree_spans(made, restart_every)
    planned = [(e - s, (e - s - 1) // (b + 1) + 1, b) for s, e in spans]
    assert p["epsilon"] == pytest.approx(brute_epsilon(Z, planned, p["delta"]), rel=1e-9)
    # The observed bound: the participation read from the events.
    observed, trees = [], []
    for s, e in spans:
        tree = leaves[s:e]
        counts: dict[int, int] = {}
        for c in tree:
            for d in c:
                counts[d] = counts.get(d, 0) + 1
        g = fewest_between(tree)
        most = max(counts.values(), default=0)
        trees.append({"releases": e - s, "most_participations": most,
                      "fewest_releases_between": g})
        if most:
            observed.append((e - s, most, e - s if g is None else g))
    assert p["observed_participation"]["trees"] == trees
    assert p["observed_participation"]["devices_contributed"] == len({d for c in leaves for d in c})
    assert p["epsilon_observed_participation"] == pytest.approx(
        brute_epsilon(Z, observed, p["delta"]) if observed else 0.0, rel=1e-9)
    assert p["epsilon_observed_participation"] <= p["epsilon"] * (1 + 1e-9)
    # Each row's figure bounds the guarantee so far (the closed form, never below it).
    made_so_far = 0
    for row, c in zip(rows, contributors):
        made_so_far += c is not None  # a skipped release is no leaf and costs nothing
        so_far = [(e - s, (e - s - 1) // (b + 1) + 1, b)
                  for s, e in tree_spans(made_so_far, restart_every)]
        bound = brute_epsilon(Z, so_far, p["delta"]) if so_far else 0.0
        assert row["epsilon"] >= bound * (1 - 1e-9)
        assert row["noise_multiplier"] == Z


def skellam_rdp_at(variance: float, l1: float, l2: float) -> np.ndarray:
    """The Skellam mechanism's RDP (Agarwal, Kairouz & Liu 2021, integer orders; a
    fractional order takes the bound at the next integer, at least 2)."""
    a = np.maximum(np.ceil(RDP_ORDERS), 2.0)
    extra = np.minimum(((2 * a - 1) * l2**2 + 6 * l1) / (4 * variance**2), 3 * l1 / (2 * variance))
    return a * l2**2 / (2 * variance) + extra


def check_skellam(p: dict, rows: list[dict]) -> None:
    """A Skellam summary against its rows: each release charged at the shares it summed
    (secure aggregation's survivors; the minimum if not made), ε their composition."""
    from dp_accounting import rdp

    acc = p["accounting"]
    k, v = acc["distributed_noise_min_survivors"], acc["variance_nominal_integer"]
    assert acc["mechanism"] == "distributed-skellam" and acc["sampling"] == "none"
    assert k == COHORT - 1 and p["rounds_accounted"] == len(rows)
    shares = [r["secagg_survivors"] if r["secagg_survivors"] >= k else k for r in rows]
    for row, n in zip(rows, shares):
        assert row["noise_multiplier"] == pytest.approx(Z * math.sqrt(n / k), rel=1e-12)
    charged: dict[int, int] = {}
    for n in shares:
        charged[n] = charged.get(n, 0) + 1
    assert acc["variances_charged_integer"] == [[v * n / k, c] for n, c in sorted(charged.items())]
    total = sum(c * skellam_rdp_at(v * n / k, acc["l1_sensitivity_integer"],
                                   acc["l2_sensitivity_integer"]) for n, c in charged.items())
    eps = float(rdp.compute_epsilon(RDP_ORDERS, total, p["delta"])[0])
    assert p["epsilon"] == pytest.approx(eps, rel=1e-9)
    assert 0.0 <= p["delta_truncation"] < p["delta"]


#: The model's weights (3*4 + 4 + 4*2 + 2): a Skellam budget depends on the model size.
DIM = 26


def _budget_between_first_and_second_release(scenario: Scenario) -> float:
    """A target ε that one release (at nominal noise) fits and two do not."""
    budget = PrivacyBudget.for_scenario(scenario, DEVICES, dim=DIM)
    assert budget is not None
    state = budget.initial_state()
    one = budget.next_epsilon(state)
    state = budget.charge(state, Participation(online=DEVICES, selected=COHORT,
                                               contributors=tuple(range(COHORT))), COHORT)
    return (one + budget.next_epsilon(state)) / 2


#: (mode, aggregator, secure aggregation) of every DP row that runs under a target.
# (dp-ftrl and clipped-ftrl stop exactly as dp-ftrl-restart and dp-ftrl-sep do: the same
# budget; left out to keep the suite short.)
TARGETS = [(m, a, "plain") for m in MODES
           for a in sorted(PRIVATE - {"dp-skellam", "dp-ftrl", "clipped-ftrl"})
           if expected_refusal(m, a, "plain") is None] + [
    ("sync", "dp-skellam", "secagg")]


@pytest.mark.slow
@pytest.mark.parametrize("mode, aggregator, secure", TARGETS, ids=["-".join(t) for t in TARGETS])
def test_the_target_epsilon_is_enforced_before_the_release_that_would_pass_it(
    mode: str, aggregator: str, secure: str
) -> None:
    options = dict(delta=1e-5, min_separation=PRIVACY.get(aggregator, Privacy()).min_separation)
    scenario = build(mode, aggregator, secure, privacy=Privacy(**options))
    target = _budget_between_first_and_second_release(scenario)
    scenario = dataclasses.replace(scenario, privacy=Privacy(target_epsilon=target, **options))
    result = run_scenario(scenario, RunOptions(rounds=4, keep_events=True))
    p = result.summary["privacy"]
    assert result.summary["stopped"] == "privacy-budget"
    assert p["epsilon"] <= target < p["next_round_epsilon"]
    assert 1 <= result.summary["rounds"] < 4
    assert [e for e in result.events if e["event"] == "privacy.budget_exhausted"]


@pytest.mark.parametrize("mode", list(MODES))
def test_a_target_below_one_release_is_refused_before_anything_runs(mode: str) -> None:
    scenario = build(mode, "dp-fixed", "plain", privacy=Privacy(target_epsilon=1e-3))
    with pytest.raises(ConfigError, match="privacy.target_epsilon"):
        PrivacyBudget.for_scenario(scenario, DEVICES)


def test_a_wrapper_that_hides_a_dp_stage_is_refused() -> None:
    from fedactors.aggregation.base import Wrapper

    class Quiet(Wrapper):
        def encode(self, params, delta, num_examples, rng):
            return self.inner.encode(params, delta, num_examples, rng)

        def private_release(self):
            return None  # forgets to forward

    dp = DPMean.fixed(1.0, Z, COHORT)
    with pytest.raises(ConfigError, match="does not forward its private_release"):
        dataclasses.replace(build("sync", "weighted-mean", "plain"), aggregator=Quiet(dp))
    # Forwarded through any depth of wrapping, the run is accounted.
    scenario = dataclasses.replace(build("sync", "weighted-mean", "plain"),
                                   aggregator=Clipped(2.0, Clipped(1.0, dp)))
    assert scenario.aggregator.private_release() == dp.private_release()


# -- the newer mechanisms off the matrix's axes ----------------------------------------------


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in open(out / "metrics.jsonl")]


#: Poisson sampling: (aggregator, secure aggregation) of the rows it changes something for.
# One cell per mechanism feature (restarts, the separation under secure aggregation,
# Skellam under SecAgg+), to keep the suite short.
# (DP-FTRL under secure aggregation is refused on Poisson rounds: an abort there depends on
# one device's presence.)
POISSON = [("dp-ftrl-restart", "plain"), ("dp-ftrl-sep", "plain"), ("dp-skellam", "secagg+")]


@pytest.mark.slow
@pytest.mark.parametrize("aggregator, secure", POISSON, ids=["-".join(c) for c in POISSON])
def test_new_mechanisms_under_poisson_sampling(aggregator: str, secure: str,
                                               tmp_path: Path) -> None:
    """Poisson rounds (a cohort of varying size): neither mechanism claims amplification,
    so the summary must not either, and its ε is still what the run was charged."""
    scenario = build("sync", aggregator, secure,
                     rounds=Rounds(count=3, cohort_size=COHORT, deadline=60.0, sampling="poisson"))
    result = run_scenario(scenario, RunOptions(out_dir=tmp_path, keep_events=True))
    p, rows = result.summary["privacy"], _rows(tmp_path)
    assert len(rows) == 3 and p["accounting"]["sampling"] == "none"
    if aggregator in TREES:
        check_tree(aggregator, p, rows, release_contributors(result.events))
    else:
        check_skellam(p, rows)


def _flaky(scenario: Scenario) -> Scenario:
    """Six of the eight devices always drop out: most cohorts of 4 have 0 or 1 left."""
    return dataclasses.replace(scenario, fleet=[
        DeviceClass("steady", count=2, compute=40.0, examples=20),
        DeviceClass("flaky", count=6, compute=40.0, examples=20, dropout=1.0)],
        rounds=Rounds(count=4, cohort_size=COHORT, deadline=60.0))


DROPOUTS = [("dp-ftrl", "plain"), ("dp-ftrl", "secagg"), ("dp-ftrl-sep", "secagg+"),
            ("dp-skellam", "secagg")]


@pytest.mark.slow
@pytest.mark.parametrize("aggregator, secure", DROPOUTS, ids=["-".join(c) for c in DROPOUTS])
def test_new_mechanisms_with_dropouts(aggregator: str, secure: str, tmp_path: Path) -> None:
    """Dropouts: DP-FTRL releases its noise whoever reported (plain), but a secure round
    that aborts is a skipped release, which the summary must state as a violation;
    Skellam charges a release it did not make at the nominal noise."""
    scenario = _flaky(build("sync", aggregator, secure))
    result = run_scenario(scenario, RunOptions(out_dir=tmp_path, keep_events=True))
    p, rows = result.summary["privacy"], _rows(tmp_path)
    assert len(rows) == 4
    contributors = release_contributors(result.events)
    if aggregator in TREES:
        check_tree(aggregator, p, rows, contributors)
        if secure == "plain":  # nothing is skipped: the tree releases at every step
            assert p["releases_skipped"] == 0 and p["assumption_held"]
            assert all(c is not None and len(c) < COHORT for c in contributors)
        else:  # this seed's cohorts abort at least once, and the summary says so
            assert p["releases_skipped"] > 0 and not p["assumption_held"]
            assert p["violations"][0].startswith("skipped releases:")
    else:
        check_skellam(p, rows)
        assert p["accounting"]["releases_not_made"] == sum(c is None for c in contributors) > 0


def test_canaries_are_refused_at_load_in_every_cell_but_central_dp_means_in_rounds() -> None:
    """``Privacy(canaries=2)`` in every cell of the matrix that is not refused already:
    refused naming the field, except synchronous rounds with a central-noise DPMean."""
    accepted = []
    for mode in MODES:
        for aggregator in AGGREGATORS:
            for secure in SECURE:
                if expected_refusal(mode, aggregator, secure) is not None:
                    continue
                sep = PRIVACY.get(aggregator, Privacy()).min_separation
                privacy = Privacy(canaries=2, min_separation=sep)
                if aggregator not in PRIVATE:  # Privacy needs a DP stage at all
                    with pytest.raises(ConfigError) as caught:
                        build(mode, aggregator, secure, privacy=privacy)
                    assert caught.value.field == "privacy"
                    continue
                try:
                    build(mode, aggregator, secure, privacy=privacy)
                except ConfigError as exc:
                    assert exc.field == "privacy.canaries", (mode, aggregator, secure, str(exc))
                    assert "\n" not in str(exc)
                else:
                    accepted.append((mode, aggregator, secure))
    assert accepted == [("sync", a, "plain") for a in ("dp-fixed", "dp-adaptive", "clipped-dp")]


def test_canaries_on_the_matrix_model_are_refused_before_any_round(tmp_path: Path) -> None:
    from fedactors.errors import ScenarioError

    scenario = build("sync", "dp-fixed", "plain", privacy=Privacy(canaries=2))
    with pytest.raises(ScenarioError, match=r"privacy\.canaries: needs a model of at least "
                                            rf"1,000 parameters, this one has {DIM}"):
        run_scenario(scenario, RunOptions(out_dir=tmp_path / "run"))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def _wide_model() -> keras.Model:  # 1,802 parameters: enough for canaries
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(300, activation="relu"),
                             keras.layers.Dense(2)])


CANARY_CELLS = [("dp-fixed", "fixed_size"), ("clipped-dp", "fixed_size"),
                ("dp-adaptive", "poisson")]


@pytest.mark.slow
@pytest.mark.parametrize("aggregator, sampling", CANARY_CELLS,
                         ids=["-".join(c) for c in CANARY_CELLS])
def test_canaries_leave_the_guarantee_as_it_is(aggregator: str, sampling: str,
                                               tmp_path: Path) -> None:
    """Canaries are not devices: the run's ε is what the same releases cost without them,
    and the estimate beside it says it is no guarantee."""
    k = 4
    scenario = dataclasses.replace(
        build("sync", aggregator, "plain", privacy=Privacy(canaries=k),
              rounds=Rounds(count=2, cohort_size=COHORT, deadline=60.0, sampling=sampling)),
        model=_wide_model)
    result = run_scenario(scenario, RunOptions(out_dir=tmp_path, keep_events=True))
    p, rows = result.summary["privacy"], _rows(tmp_path)
    plain = dataclasses.replace(scenario, privacy=Privacy())
    budget = PrivacyBudget.for_scenario(plain, DEVICES)
    state = budget.initial_state()
    for row in rows:
        state = budget.charge(state, Participation(online=DEVICES, selected=row["selected"],
                                                   contributors=()), row["reported"])
    assert p["epsilon"] == pytest.approx(budget.epsilon(state), rel=1e-12)
    assert p["assumption_held"]
    e = p["empirical"]
    assert e["canaries_inserted"] == e["canaries_held_out"] == k
    assert e["canary_participations"] == sum(r["canaries"] for r in rows)
    assert "not a guarantee" in e["note"]
    # Canaries are not counted as devices, and never sent anything on the network.
    received = release_contributors(result.events)
    assert [len(c) for c in received] == [r["reported"] for r in rows]


SYSTEM_CELLS = [("sync", "dp-ftrl-sep", "plain"), ("sync", "dp-skellam", "secagg"),
                ("fedbuff", "dp-ftrl", "plain")]


@pytest.mark.slow
@pytest.mark.parametrize("mode, aggregator, secure", SYSTEM_CELLS,
                         ids=["-".join(c) for c in SYSTEM_CELLS])
def test_new_mechanisms_with_system_randomness(mode: str, aggregator: str, secure: str,
                                               tmp_path: Path) -> None:
    """System randomness: the run says it is not reproducible, its ε is the seeded
    run's (ε depends on the noise's distribution, not its draws), and a run resumed
    from its checkpoint keeps the randomness and the accounting."""
    seeded = build(mode, aggregator, secure)
    scenario = dataclasses.replace(seeded, randomness="system")
    result = run_scenario(scenario, RunOptions(out_dir=tmp_path / "whole", keep_events=True))
    summary, rows = result.summary, _rows(tmp_path / "whole")
    assert summary["randomness"] == "system" and summary["reproducible"] is False
    # DP-FTRL's noise is TensorFlow's from one OS-drawn seed kept in the checkpoint: said so.
    tree = aggregator.startswith("dp-ftrl")
    assert ("checkpoint.pkl" in summary["reproducible_note"]) == tree
    assert any(w.startswith("randomness:") for w in summary["warnings"])
    p = summary["privacy"]
    if aggregator in TREES:
        check_tree(aggregator, p, rows, release_contributors(result.events))
    else:
        check_skellam(p, rows)
    twin = run_scenario(seeded, RunOptions(out_dir=tmp_path / "seeded"))
    assert twin.summary["randomness"] == "seeded"
    if [r.get("secagg_survivors") for r in rows] == [r.get("secagg_survivors")
                                                      for r in twin.records]:
        assert p["epsilon"] == twin.summary["privacy"]["epsilon"]
    # Resumed part-way: the same releases accounted, fresh noise.
    cut = tmp_path / "cut"
    if mode == "sync":
        run_scenario(scenario, RunOptions(out_dir=cut, rounds=1))
    else:
        run_scenario(scenario, RunOptions(out_dir=cut, rounds=2),
                     on_round=[lambda row: "interrupted" if row["round"] == 2 else None])
    resumed = run_scenario(scenario, RunOptions(out_dir=cut, rounds=2, resume=True,
                                                keep_events=True))
    assert resumed.summary["randomness"] == "system"
    assert resumed.summary["privacy"]["rounds_accounted"] == p["rounds_accounted"]
    if aggregator in TREES:
        assert resumed.summary["privacy"]["epsilon"] == p["epsilon"]
        assert resumed.summary["weights_sha256"] != summary["weights_sha256"]  # fresh noise


@pytest.mark.parametrize("aggregator, secure", [("dp-ftrl", "plain"), ("dp-ftrl-sep", "plain"),
                                                ("clipped-ftrl", "secagg"),
                                                ("dp-skellam", "secagg")])
@pytest.mark.parametrize("sampling", ["fixed_size", "poisson"])
def test_pld_accounting_is_refused_at_load_for_rdp_only_mechanisms(
    aggregator: str, secure: str, sampling: str
) -> None:
    """DP-FTRL and Skellam are accounted in RDP only: ``method="pld"`` was silently
    ignored by DP-FTRL (its summary said "rdp") and refused for Skellam only when the
    run started."""
    sep = PRIVACY.get(aggregator, Privacy()).min_separation
    if sampling == "poisson" and secure != "plain" and aggregator != "dp-skellam":
        secure = "plain"  # (refused on Poisson rounds whatever the method: see test_runtime_privacy)
    with pytest.raises(ConfigError) as caught:
        build("sync", aggregator, secure, privacy=Privacy(method="pld", min_separation=sep),
              rounds=Rounds(count=2, cohort_size=COHORT, sampling=sampling))
    assert caught.value.field == "privacy.method" and "\n" not in str(caught.value)
    build("sync", aggregator, secure, privacy=Privacy(method="best", min_separation=sep),
          rounds=Rounds(count=2, cohort_size=COHORT, sampling=sampling))


def test_docs_table_states_the_same_rules() -> None:
    text = (ROOT / "docs" / "combinations.md").read_text()
    for mode in MODES:
        for aggregator in AGGREGATORS:
            for secure in SECURE:
                refusal = expected_refusal(mode, aggregator, secure)
                row = f"| {mode} | {aggregator} | {secure} | "
                assert row in text, f"docs/combinations.md has no row {row!r}"
                line = next(line for line in text.splitlines() if line.startswith(row))
                assert ("refused" in line) == (refusal is not None), line


def test_settings_no_run_could_honour_are_refused_at_load() -> None:
    from fedactors.server.staleness import StalenessWeight

    class Boost(StalenessWeight):
        """Up-weights stale updates: past the clip norm a DP release is accounted at."""

        def __call__(self, staleness):
            return np.where(np.asarray(staleness) > 0, 2.0, 1.0)

    with pytest.raises(ConfigError, match="mode.staleness"):
        dataclasses.replace(build("fedbuff", "dp-fixed", "plain"),
                            mode=FedBuff(buffer_size=COHORT, staleness=Boost()))
    # Without DP nothing is accounted, so any weighting is the user's choice.
    dataclasses.replace(build("fedbuff", "weighted-mean", "plain"),
                        mode=FedBuff(buffer_size=COHORT, staleness=Boost()))
    with pytest.raises(ConfigError, match="rounds.cohort_size.*secure_aggregation"):
        build("sync", "clipped-mean", "secagg", rounds=Rounds(count=2, cohort_size=1))
    with pytest.raises(ConfigError, match="min_survivors"):
        DPMean.fixed(1.0, Z, COHORT, distributed_noise=True, min_survivors=COHORT + 1)
