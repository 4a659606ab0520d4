"""The code in the docs runs: a user who copies it gets what the docs promise."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fedactors.aggregation import PlainContributions, RoundContext
from fedactors.devices.fleet import Fleet
from fedactors.scenarios.spec import Scenario
from fedactors.seeding import SeedTree

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(), re.S)


def test_the_custom_stage_example_in_aggregation_md_works() -> None:
    namespace: dict = {}
    exec(python_blocks("aggregation.md")[-1], namespace)
    stage = namespace["SignVote"](0.5)
    rng = np.random.default_rng(0)
    deltas = [np.array([1.0, -2.0, 0.5], np.float32), np.array([3.0, -1.0, -0.5], np.float32),
              np.array([-1.0, -1.0, -4.0], np.float32)]
    rows = [stage.encode({}, d, 10, rng) for d in deltas]
    ctx = RoundContext(1, 3, 3, rng)
    result = stage.aggregate(None, PlainContributions(rows), ctx)
    np.testing.assert_array_equal(result.delta, [0.5, -0.5, -0.5])
    assert result.measurements == {"voters": 3.0}


def test_the_scenario_example_in_scenarios_md_builds() -> None:
    namespace: dict = {}
    exec(python_blocks("scenarios.md")[0], namespace)
    scenario = namespace["scenario"]
    assert isinstance(scenario, Scenario) and scenario.fleet_size == 220
    seeds = SeedTree(0)
    fleet = Fleet.build(scenario.fleet, seeds.generator("fleet"))
    data = scenario.data(fleet, seeds.generator("data"))
    assert data.num_devices == fleet.size
    assert scenario.model().output_shape == (None, 3)


def test_ci_runs_exactly_the_test_command_readme_gives() -> None:
    root = DOCS.parent
    command = [line for line in (root / ".ci/run").read_text().splitlines()
               if line and not line.startswith(("#", "set ", "cd "))]
    assert len(command) == 1
    readme = (root / "README.md").read_text()
    assert command[0] in readme.splitlines()
    # The two README commands set up the same interpreter the same way.
    setup = command[0].split(" && .venv/bin/pip")[0]
    assert readme.count(setup) == 2


def test_the_dirichlet_example_in_data_md_partitions_as_it_says() -> None:
    import pytest

    pytest.importorskip("flwr_datasets", reason="needs the datasets extra")
    block = next(b for b in python_blocks("data.md") if "DirichletPartitioner(num_partitions=20" in b)
    namespace: dict = {}
    exec(block, namespace)
    data, labels, counts = namespace["data"], namespace["labels"], namespace["counts"]
    assert data.num_devices == 20 and labels == list(range(10))
    assert counts.shape == (20, 10) and counts.sum() == 5000
    assert counts.min(axis=None) == 0  # alpha = 0.5: some device lacks some label
