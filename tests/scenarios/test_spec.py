"""Load-time refusals of ``Scenario``: options no run could honour, or honour only by
breaking the guarantee it states, are one line naming the field (exit 2 from the CLI)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import pytest

from fedactors import DeviceClass, FedBuff, Privacy, Rounds, Scenario
from fedactors.aggregation.clipping import Clipped
from fedactors.aggregation.fedavg import WeightedMean
from fedactors.cli import main
from fedactors.errors import ConfigError
from fedactors.privacy.dp_mean import DPMean
from fedactors.scenarios.spec import FEDBUFF_UNUSED_ROUNDS, FEDBUFF_USED_ROUNDS

N, M = 60, 10


def scenario(aggregator=None, **rounds) -> Scenario:
    return Scenario(name="spec", model=lambda: None, loss="mse", data=lambda f, r: None,
                    fleet=[DeviceClass("d", count=N)],
                    rounds=Rounds(**{"count": 5, "cohort_size": M, "deadline": 60.0, **rounds}),
                    aggregator=aggregator if aggregator is not None else DPMean.fixed(1.0, 1.2, M))


def cli_error(capsys, path: Path, source: str, *args: str) -> str:
    """The CLI's one-line error for a scenario file of ``source`` (exit 2 asserted)."""
    path.write_text(source)
    code = main([str(path), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    return err


def refusal(make) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        make()
    assert "\n" not in str(caught.value)
    return caught.value


# -- DP-FedAvg on Poisson rounds: no release may depend on the count ---------------------------


CENTRAL = {
    "fixed": lambda: DPMean.fixed(1.0, 1.2, M),
    "adaptive": lambda: DPMean.adaptive_clipping(0.5, 1.2, M),
    "wrapped": lambda: Clipped(2.0, DPMean.fixed(1.0, 1.2, M)),
}


@pytest.mark.parametrize("make", CENTRAL.values(), ids=CENTRAL.keys())
def test_poisson_dp_fedavg_refuses_a_min_reports_above_one(make) -> None:
    err = refusal(lambda: scenario(make(), sampling="poisson", min_reports=2))
    assert err.field == "rounds.min_reports"
    assert "Poisson" in err.message or "poisson" in err.message
    # The default is accepted: such a round is released whatever the count.
    assert scenario(make(), sampling="poisson").rounds.min_reports == 1


@pytest.mark.parametrize("min_reports", [1, 5])
def test_poisson_refuses_distributed_noise(min_reports: int) -> None:
    dist = DPMean.fixed(1.0, 1.2, M, distributed_noise=True)
    err = refusal(lambda: scenario(dist, sampling="poisson", min_reports=min_reports))
    assert err.field == "rounds.sampling" and "distributed_noise=True" in err.message
    adaptive = DPMean.adaptive_clipping(0.5, 1.2, M, distributed_noise=True, min_survivors=5)
    assert refusal(lambda: scenario(adaptive, sampling="poisson")).field == "rounds.sampling"
    # Fixed-size rounds keep it (replace-one: both neighbours sum as many).
    scenario(dist, min_reports=min_reports)


def test_min_reports_stays_where_the_count_is_not_what_neighbours_differ_in() -> None:
    scenario(min_reports=M)  # fixed-size DP-FedAvg: replace-one, same count for both
    scenario(WeightedMean(), sampling="poisson", min_reports=M)  # no DP: nothing claimed
    tree = DPMean.tree(1.0, 1.2, M)  # DP-FTRL releases every step: 1 is all it takes
    dataclasses.replace(scenario(tree, sampling="poisson"), privacy=Privacy())


@pytest.mark.parametrize("sampling", ["fixed_size", "poisson"])
def test_dp_ftrl_refuses_a_min_reports_it_would_ignore(sampling: str) -> None:
    err = refusal(lambda: scenario(DPMean.tree(1.0, 1.2, M), sampling=sampling, min_reports=2))
    assert err.field == "rounds.min_reports" and "DP-FTRL" in err.message


def test_the_cli_refuses_it_in_one_line_naming_file_and_field(capsys, tmp_path: Path) -> None:
    path = tmp_path / "dp_poisson_minrep.py"
    err = cli_error(
        capsys, path,
        "from fedactors import DeviceClass, Privacy, Rounds, Scenario\n"
        "from fedactors.privacy.dp_mean import DPMean\n"
        "scenario = Scenario(name='dp_poisson_minrep', model=lambda: None, loss='mse',\n"
        "    data=lambda f, r: None, fleet=[DeviceClass('d', count=60)],\n"
        "    rounds=Rounds(count=5, cohort_size=10, deadline=60.0, sampling='poisson',\n"
        "                  min_reports=10),\n"
        "    aggregator=DPMean.fixed(clip_norm=1.0, noise_multiplier=1.2, expected_count=10),\n"
        "    privacy=Privacy(delta=1e-5), seed=1)\n", "--rounds", "8")
    assert err.startswith(f"error: {path}:6: rounds.min_reports: is 10, but with sampling='poisson'")


# -- FedBuff uses only count, deadline and eval_every ------------------------------------------


UNUSED = {"cohort_size": 7, "over_selection": 2.0, "min_reports": 3, "sampling": "poisson",
          "outlier_factor": None}


def fedbuff(**rounds) -> Scenario:
    return Scenario(name="fedbuff", model=lambda: None, loss="mse", data=lambda f, r: None,
                    fleet=[DeviceClass("d", count=N)], rounds=Rounds(**rounds),
                    mode=FedBuff(buffer_size=5, concurrency=8))


def test_the_unused_fields_are_the_ones_named() -> None:
    # Every Rounds field is either used by FedBuff or refused: a new field cannot slip by.
    names = {f.name for f in dataclasses.fields(Rounds)}
    assert set(FEDBUFF_UNUSED_ROUNDS) | set(FEDBUFF_USED_ROUNDS) == names
    assert set(FEDBUFF_UNUSED_ROUNDS) == set(UNUSED)  # each one exercised below


@pytest.mark.parametrize("name", UNUSED)
def test_fedbuff_refuses_each_rounds_option_it_does_not_use(name: str) -> None:
    err = refusal(lambda: fedbuff(**{name: UNUSED[name]}))
    assert err.field == f"rounds.{name}" and "FedBuff does not use it" in err.message
    # The same option in synchronous rounds is accepted.
    dataclasses.replace(fedbuff(), mode=None, rounds=Rounds(**{name: UNUSED[name]}))


def test_fedbuff_accepts_what_it_uses_and_the_defaults() -> None:
    s = fedbuff(count=7, deadline=30.0, eval_every=2)
    assert (s.rounds.count, s.rounds.deadline, s.rounds.eval_every) == (7, 30.0, 2)
    # A default written out is no option set.
    fedbuff(cohort_size=10, over_selection=1.0, min_reports=1, sampling="fixed_size",
            outlier_factor=1e6)


def test_the_reported_trial_combination_is_refused_naming_one_field() -> None:
    err = refusal(lambda: fedbuff(sampling="poisson", cohort_size=7, min_reports=3,
                                  over_selection=2))
    assert err.field in {f"rounds.{n}" for n in UNUSED} and "FedBuff" in err.message


def test_fedbuff_refuses_device_added_noise_its_staleness_weights_would_shrink() -> None:
    # Each device's noise share is scaled with its update by the staleness weight (<= 1),
    # so a buffer would carry less noise than charged; central noise is added after.
    def with_aggregator(agg):
        return dataclasses.replace(fedbuff(), aggregator=agg, privacy=Privacy())

    err = refusal(lambda: with_aggregator(
        DPMean.fixed(1.0, 1.0, 5, distributed_noise=True, min_survivors=5)))
    assert err.field == "aggregator" and "staleness weight" in err.message
    with_aggregator(DPMean.fixed(1.0, 1.0, 5))  # central noise: accepted


# -- fields a user writes as a bare value -------------------------------------------------------


@pytest.mark.parametrize("metrics", ["accuracy", None, {"accuracy"}])
def test_metrics_not_given_as_a_list_are_refused_naming_the_field(metrics) -> None:
    # A bare string was read one letter at a time ("Could not interpret metric identifier: a").
    caught = refusal(lambda: dataclasses.replace(scenario(), metrics=metrics))
    assert caught.field == "metrics" and '["accuracy"]' in caught.message
    dataclasses.replace(scenario(), metrics=["accuracy"])
    dataclasses.replace(scenario(), metrics=())  # none at all is a choice


@pytest.mark.parametrize("metric", [keras.losses.mean_absolute_error, lambda y, p: p, 3])
def test_a_metric_that_is_neither_a_name_nor_a_keras_metric_is_refused(metric) -> None:
    # A plain function has no name: Keras failed at the first evaluation, blamed on "model".
    caught = refusal(lambda: dataclasses.replace(scenario(), metrics=["accuracy", metric]))
    assert caught.field == "metrics[1]" and "MeanMetricWrapper" in caught.message
    wrapped = keras.metrics.MeanMetricWrapper(keras.losses.mean_absolute_error, name="mae")
    dataclasses.replace(scenario(), metrics=["accuracy", wrapped])


def test_data_returning_the_wrong_type_names_the_scenario_file(capsys, tmp_path: Path) -> None:
    path = tmp_path / "returns_tuple.py"
    err = cli_error(
        capsys, path,
        "import keras\nimport numpy as np\n"
        "from fedactors import DeviceClass, Rounds, Scenario\n"
        "scenario = Scenario(name='t', loss='mse', fleet=[DeviceClass('d', count=2)],\n"
        "    model=lambda: keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]),\n"
        "    data=lambda fleet, rng: (np.zeros((2, 1)), np.zeros(2)),\n"
        "    rounds=Rounds(count=1, cohort_size=2, deadline=60.0))\n", "--out", str(tmp_path / "run"))
    assert err == (f"error: {path}: data: must return a FederatedData or GeneratedData, "
                   "got tuple")


def test_a_numpy_whole_number_seed_is_taken_as_an_int() -> None:
    # Found from outside: seeds from np.arange in a sweep were refused with "must be a
    # whole number >= 0, got 1".
    import numpy as np

    sc = dataclasses.replace(scenario(), seed=np.int64(1))
    assert sc.seed == 1 and type(sc.seed) is int
    for bad in (True, -1, 1.0, "1"):
        assert str(refusal(lambda bad=bad: dataclasses.replace(scenario(), seed=bad))).startswith(
            "seed: must be a whole number >= 0")
