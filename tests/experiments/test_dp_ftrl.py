"""The DP-FTRL experiment: DP-FedAvg vs DP-FTRL at the same noise, and the non-private run."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import dp_accounting
import pytest
from dp_accounting import rdp

from fedactors import Privacy
from fedactors.aggregation.fedavg import WeightedMean
from fedactors.errors import EXIT_BAD_INPUT
from fedactors.experiments import dp_ftrl
from fedactors.privacy.dp_mean import DPMean
from fedactors.privacy.tree_mean import TreeDPMean

ROOT = Path(__file__).resolve().parents[2]

#: A 30-device fleet, 70% online (so DP-FedAvg's sampling assumption breaks), trained
#: with DP-FTRL and a separation of one release.
SCENARIO = (
    f"import sys, dataclasses\nsys.path.insert(0, {str(ROOT)!r})\n"
    "from fedactors import DPMean, Privacy\n"
    "from tests.privacy.test_runtime_privacy import C, M, Z, _scenario\n"
    "scenario = dataclasses.replace(_scenario(online=0.7), name='tiny_ftrl',\n"
    "    aggregator=DPMean.tree(C, Z, M), privacy=Privacy(min_separation=1))\n"
)


def _tiny():
    from tests.privacy.test_runtime_privacy import C, M, Z, _scenario

    return dataclasses.replace(_scenario(online=0.7), aggregator=DPMean.tree(C, Z, M, restart_every=8),
                               privacy=Privacy(min_separation=1, target_epsilon=50.0))


def test_variants_keep_clip_cohort_and_change_only_the_mechanism() -> None:
    scenario = _tiny()
    chosen = dp_ftrl.variants([1.0, 2.0])
    assert [v.key for v in chosen] == ["non-private", "dp-ftrl-z1", "dp-ftrl-z2", "dp-fedavg-z1",
                                       "dp-fedavg-z2"]
    plain, ftrl, _, fedavg, _ = (dp_ftrl.configure(scenario, v) for v in chosen)
    assert isinstance(plain.aggregator, WeightedMean) and plain.privacy is None
    assert isinstance(ftrl.aggregator, TreeDPMean)
    assert (ftrl.aggregator.clip_norm, ftrl.aggregator.noise_multiplier,
            ftrl.aggregator.expected_count, ftrl.aggregator.restart_every) == (1.0, 1.0, 6, 8)
    assert ftrl.privacy.min_separation == 1 and ftrl.privacy.target_epsilon is None
    # DP-FedAvg: the same C, z and m; no separation rule (it is refused with DP-FedAvg).
    assert (fedavg.aggregator.clip_norm, fedavg.aggregator.noise_multiplier,
            fedavg.aggregator.expected_count) == (1.0, 1.0, 6)
    assert fedavg.privacy.min_separation == 0 and fedavg.privacy.target_epsilon is None
    assert {plain.rounds, ftrl.rounds, fedavg.rounds} == {scenario.rounds}


def test_epsilon_without_amplification_is_composed_gaussians() -> None:
    privacy = {"delta": 1e-5, "accounting": {"population": 3000, "sample_size": 65,
                                             "noise_multiplier": 3.0,
                                             "noise_multipliers_charged": [[3.0, 60]]}}
    acc = rdp.RdpAccountant()
    acc.compose(dp_accounting.GaussianDpEvent(3.0), 60)
    got = dp_ftrl.epsilon_without_amplification(privacy)
    # "best" may use PLD, never looser than RDP.
    assert got <= acc.get_epsilon(1e-5) * (1 + 1e-9) and got > 0.8 * acc.get_epsilon(1e-5)
    privacy["accounting"]["noise_multipliers_charged"] = [[0.0, 1]]
    assert math.isinf(dp_ftrl.epsilon_without_amplification(privacy))


def test_a_scenario_without_dp_ftrl_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "scenario.py"
    path.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                    "from tests.privacy.test_runtime_privacy import _scenario\n"
                    "scenario = _scenario()\n")
    assert dp_ftrl.main([str(path), "--out", str(tmp_path / "exp"), "--quiet"]) == EXIT_BAD_INPUT
    assert not (tmp_path / "exp" / "results.csv").exists()


@pytest.mark.slow
def test_experiment_command_writes_csv_png_and_run_directories(tmp_path: Path) -> None:
    path = tmp_path / "scenario.py"
    path.write_text(SCENARIO)
    out = tmp_path / "exp"
    code = dp_ftrl.main([str(path), "--noise", "1.2", "--rounds", "3", "--seed", "1",
                         "--out", str(out), "--quiet"])
    assert code == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert tuple(rows[0]) == dp_ftrl.CSV_FIELDS
    assert [r["method"] for r in rows] == ["non-private", "DP-FTRL", "DP-FedAvg"]
    plain, ftrl, fedavg = rows
    assert plain["epsilon"] == "" and plain["assumption_held"] == ""
    # DP-FTRL's ε is the planned bound and holds whoever was online.
    assert ftrl["assumption_held"] == "True" and ftrl["epsilon_is_guarantee"] == "True"
    assert float(ftrl["epsilon"]) == float(ftrl["epsilon_guaranteed"]) > 0
    assert float(ftrl["epsilon_observed_participation"]) <= float(ftrl["epsilon"])
    assert ftrl["min_separation"] == "1" and ftrl["neighboring"] == "add-or-remove-one"
    # DP-FedAvg's amplified ε is not a guarantee on this fleet (30% offline); beside it, the
    # bound without amplification (add-or-remove-one, as DP-FTRL's) from the run's releases.
    assert fedavg["assumption_held"] == "False" and fedavg["epsilon_is_guarantee"] == "False"
    assert "availability" in fedavg["violations"] and fedavg["neighboring"] == "replace-one"
    summary = json.loads((Path(fedavg["run_dir"]) / "summary.json").read_text())
    assert float(fedavg["epsilon"]) == summary["privacy"]["epsilon"]
    assert float(fedavg["epsilon_guaranteed"]) == dp_ftrl.epsilon_without_amplification(
        summary["privacy"])
    assert {r["rounds"] for r in rows} == {"3"}
    for r in rows:
        assert 0.0 <= float(r["final_accuracy"]) <= float(r["best_accuracy"]) <= 1.0
        assert (Path(r["run_dir"]) / "summary.json").exists()
    for name in ("accuracy_vs_epsilon.png", "accuracy_vs_round.png"):
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert "not a guarantee" in (out / "results.md").read_text()
