"""Canaries in a real run: the empirical ε rises as the noise falls and stays below ε.

A run where the accountant's assumptions hold (fixed-size uniform sampling of
the whole fleet, every device always online, no dropouts), trained for real
with Keras, at three noise multipliers. The maths of the estimate is tested
alone in test_canaries.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import keras
import numpy as np
import pytest

from fedactors import DeviceClass, LocalTraining, Privacy, Rounds, Scenario
from fedactors.data.federated import FederatedData
from fedactors.errors import ScenarioError
from fedactors.privacy.dp_mean import DPMean
from fedactors.simulation import RunOptions, run_scenario

N, M, C, ROUNDS, CANARIES = 40, 10, 1.0, 10, 300
NOISE = (0.6, 1.0, 1.5)


def _data(fleet, rng: np.random.Generator) -> FederatedData:
    w = rng.normal(size=20).astype(np.float32)
    clients = []
    for _ in range(fleet.size):
        x = rng.normal(size=(20, 20)).astype(np.float32)
        clients.append((x, (x @ w > 0).astype(np.int32)))
    xt = rng.normal(size=(200, 20)).astype(np.float32)
    return FederatedData.from_arrays(clients, (xt, (xt @ w > 0).astype(np.int32)))


def _scenario(z: float) -> Scenario:
    # 3,452 parameters: enough for a random direction's cosine to be near-Gaussian.
    return Scenario(
        name="canaries",
        model=lambda: keras.Sequential([keras.Input((20,)),
                                        keras.layers.Dense(150, activation="relu"),
                                        keras.layers.Dense(2)]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        data=_data,
        fleet=[DeviceClass("d", count=N)],  # always online, never drops
        rounds=Rounds(count=ROUNDS, cohort_size=M, eval_every=ROUNDS),
        training=LocalTraining(batch_size=10, optimizer=lambda: keras.optimizers.SGD(0.05)),
        aggregator=DPMean.fixed(C, z, M),
        privacy=Privacy(canaries=CANARIES),
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[float, Path]:
    out = {}
    for z in NOISE:
        out[z] = tmp_path_factory.mktemp("canaries") / f"z{z}"
        run_scenario(_scenario(z), RunOptions(out_dir=out[z], device_events=False,
                                              checkpoint=False))
    return out


def _summary(path: Path) -> dict:
    return json.loads((path / "summary.json").read_text())


@pytest.mark.slow
def test_estimate_rises_as_noise_falls_and_stays_below_the_accountant(runs) -> None:
    privacy = [_summary(runs[z])["privacy"] for z in NOISE]
    assert all(p["assumption_held"] for p in privacy)  # the run the guarantee describes
    estimates = [p["empirical"]["epsilon"] for p in privacy]
    # Less noise, more of each canary visible in the final model.
    assert estimates[0] > estimates[1] > estimates[2] > 0
    assert estimates[0] > 4.0  # measured 8.2: the canaries are really in the model
    for z, p in zip(NOISE, privacy):
        e = p["empirical"]
        # What the accountant proves for the canary itself (its own sampling,
        # add-or-remove-one) is at most the run's ε (fixed-size sampling, replace-one).
        assert e["epsilon_canary_bound"] <= p["epsilon"]
        # The estimate of what the final model reveals about a canary is a point estimate
        # from 300 canaries' cosines: at most that bound up to its sampling error (5%
        # allowed; the weakest noise's lands within 1% of it), and above it the run says so.
        assert e["epsilon"] <= 1.05 * e["epsilon_canary_bound"]
        above = [w for w in _summary(runs[z])["warnings"] if "above what the accountant" in w]
        assert len(above) == (e["epsilon"] > e["epsilon_canary_bound"])
        assert e["delta"] == p["delta"]


@pytest.mark.slow
def test_cosine_statistics_and_counts_are_reported(runs) -> None:
    for z in NOISE:
        summary = _summary(runs[z])
        e = summary["privacy"]["empirical"]
        assert e["canaries_inserted"] == e["canaries_held_out"] == CANARIES
        assert e["parameters"] == summary["parameters"] == 3452
        assert e["participation_rate"] == M / N
        assert "not a guarantee" in e["note"]
        # Canaries never inserted: cosine ~ N(0, 1/d), the null the estimate uses.
        assert e["null_cosine_sd"] == pytest.approx(1 / math.sqrt(3452))
        assert e["held_out_cosine_sd"] == pytest.approx(e["null_cosine_sd"], rel=0.15)
        assert abs(e["held_out_cosine_mean"]) < 4 * e["null_cosine_sd"] / math.sqrt(CANARIES)
        # Inserted ones lean towards the model delta.
        assert e["cosine_mean"] > 4 * e["null_cosine_sd"] / math.sqrt(CANARIES)
        rows = [json.loads(line) for line in open(runs[z] / "metrics.jsonl")]
        assert e["canary_participations"] == sum(r["canaries"] for r in rows)
        # Each canary joins a round with probability M/N: about k * q per round.
        assert e["canary_participations"] == pytest.approx(CANARIES * M / N * ROUNDS, rel=0.1)
        assert all(r["reported"] == M for r in rows)  # canaries are not counted as devices


def test_a_model_too_small_for_the_estimate_is_refused_before_any_round(tmp_path: Path) -> None:
    small = dataclasses.replace(
        _scenario(1.0),
        model=lambda: keras.Sequential([keras.Input((20,)), keras.layers.Dense(2)]))
    with pytest.raises(ScenarioError, match=r"privacy\.canaries: needs a model of at least "
                                            r"1,000 parameters, this one has 42") as info:
        run_scenario(small, RunOptions(out_dir=tmp_path / "run"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_a_resumed_canary_run_ends_with_the_same_estimate(tmp_path: Path) -> None:
    # Canaries keep no state between releases (every draw comes from the seed tree by
    # release and canary), so a run resumed from its checkpoint inserts the same ones.
    scenario = _scenario(1.0)
    whole = run_scenario(scenario, RunOptions(out_dir=tmp_path / "whole", rounds=4,
                                              device_events=False))
    run_scenario(scenario, RunOptions(out_dir=tmp_path / "split", rounds=2, device_events=False))
    resumed = run_scenario(scenario, RunOptions(out_dir=tmp_path / "split", rounds=4,
                                                resume=True, device_events=False))
    assert resumed.summary["weights_sha256"] == whole.summary["weights_sha256"]
    assert resumed.summary["privacy"]["empirical"] == whole.summary["privacy"]["empirical"]
    assert whole.summary["privacy"]["empirical"]["canary_participations"] == sum(
        r["canaries"] for r in whole.records)
