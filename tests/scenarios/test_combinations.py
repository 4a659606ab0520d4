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

The table in docs/combinations.md states the same rules; a test below reads
it so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
import json
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
from fedactors.privacy.budget import PrivacyBudget
from fedactors.privacy.dp_mean import DPMean
from fedactors.runtime import checkpoint
from fedactors.runtime.network import Network
from fedactors.simulation import RunOptions, run_scenario

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
}
SECURE: dict[str, Optional[SecureAggregation]] = {
    "plain": None,
    "secagg": SecureAggregation.complete(),
    "secagg+": SecureAggregation.sparse(),
}
EXECUTORS = ("vectorized", "sequential")
PRIVATE = {"dp-fixed", "dp-adaptive", "dp-distributed", "clipped-dp"}
INDIVIDUAL = {"trimmed-mean", "krum"}


def expected_refusal(mode: str, aggregator: str, secure: str) -> Optional[tuple[str, str]]:
    """The two fields a refusal must name, or None if the combination must run."""
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
        rounds=Rounds(count=2, cohort_size=COHORT, deadline=60.0), mode=MODES[mode],
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


COMBINATIONS = [
    (m, a, s, e) for m in MODES for a in AGGREGATORS for s in SECURE for e in EXECUTORS
]


@pytest.fixture
def server_mail(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every message any device sends the server, as it is put on the wire."""
    sent: list = []
    original = Network.to_server

    def spy(self, device, message):
        sent.append(message)
        return original(self, device, message)

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
    result = run_scenario(scenario, RunOptions(out_dir=out, executor=executor, checkpoint=True))
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


def _budget_between_first_and_second_release(scenario: Scenario) -> float:
    """A target ε that one release (at nominal noise) fits and two do not."""
    budget = PrivacyBudget.for_scenario(scenario, DEVICES)
    assert budget is not None
    one = budget.initial_state().ledger.compose(1)
    return (one.epsilon(budget.delta) + one.compose(1).epsilon(budget.delta)) / 2


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("aggregator", sorted(PRIVATE))
def test_the_target_epsilon_is_enforced_before_the_release_that_would_pass_it(
    mode: str, aggregator: str
) -> None:
    scenario = build(mode, aggregator, "plain", privacy=Privacy(delta=1e-5))
    target = _budget_between_first_and_second_release(scenario)
    scenario = dataclasses.replace(scenario, privacy=Privacy(target_epsilon=target, delta=1e-5))
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
