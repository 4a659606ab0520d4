"""The Flower Datasets scenarios, through their real loading code on tiny local data.

The Hugging Face hub is out of reach here and in CI, so ``datasets.load_dataset``
(the one call that downloads) is replaced by a small ``DatasetDict`` with the
real dataset's columns and features; everything after it is the scenario's own
path: ``FederatedDataset``, its shuffle and divider, the partitioner,
``preprocess``, the device classes by size. The fleet is shrunk to fit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr_datasets", reason="needs the datasets extra: pip install -e '.[datasets]'")

import datasets  # noqa: E402
from PIL import Image as PILImage  # noqa: E402

from fedactors.reporting.report import write_report  # noqa: E402
from fedactors.scenarios.loader import load_module  # noqa: E402
from fedactors.simulation import RunOptions, run_scenario  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _images(rng, n: int, shape: tuple[int, ...], mode: str) -> list:
    return [PILImage.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)
            for _ in range(n)]


def _femnist(rng) -> datasets.DatasetDict:
    writers = np.repeat([f"f{i:04d}_{i % 7:02d}" for i in range(16)], rng.integers(10, 25, 16))
    n = len(writers)
    features = datasets.Features({
        "image": datasets.Image(), "writer_id": datasets.Value("string"),
        "character": datasets.ClassLabel(num_classes=62), "hsf_id": datasets.Value("int64")})
    train = datasets.Dataset.from_dict({
        "image": _images(rng, n, (28, 28), "L"), "writer_id": writers.tolist(),
        "character": rng.integers(0, 62, n).tolist(), "hsf_id": rng.integers(0, 8, n).tolist()},
        features=features)
    return datasets.DatasetDict({"train": train})


def _cifar10(rng) -> datasets.DatasetDict:
    features = datasets.Features({"img": datasets.Image(),
                                  "label": datasets.ClassLabel(num_classes=10)})

    def split(n):
        return datasets.Dataset.from_dict({"img": _images(rng, n, (32, 32, 3), "RGB"),
                                           "label": (np.arange(n) % 10).tolist()}, features=features)

    return datasets.DatasetDict({"train": split(600), "test": split(60)})


def _shakespeare(rng) -> datasets.DatasetDict:
    text = "To be, or not to be, that is the question: Whether 'tis nobler in the mind to suffer "
    rows = {"character_id": [], "x": [], "y": []}
    for role in range(10):
        for _ in range(int(rng.integers(15, 40))):
            start = int(rng.integers(0, len(text) - 81))
            rows["character_id"].append(f"PLAY_ROLE{role}")
            rows["x"].append(text[start : start + 80])
            rows["y"].append(text[start + 80])
    return datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)})


CASES = {
    # scenario file: (local stand-in, the fleet's class counts shrunk to fit it)
    "femnist.py": (_femnist, (8, 4)),
    "cifar10_dirichlet.py": (_cifar10, (7, 3)),
    "shakespeare.py": (_shakespeare, (8,)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_the_scenario_runs_two_rounds_through_its_loading_code(name, monkeypatch, tmp_path) -> None:
    make, counts = CASES[name]
    local = make(np.random.default_rng(0))
    asked: list[str] = []

    def load_dataset(path, name=None, **kwargs):
        asked.append(path)
        return local

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    module = load_module(ROOT / "scenarios" / name)
    scenario = module.scenario
    fleet = [replace(c, count=n) for c, n in zip(scenario.fleet, counts, strict=True)]
    scenario = replace(scenario, fleet=fleet, rounds=replace(
        scenario.rounds, count=2, cohort_size=4, over_selection=1.0, min_reports=1,
        deadline=1e6))
    out = tmp_path / "run"
    run_scenario(scenario, RunOptions(out_dir=out, executor="vectorized"))
    assert asked == [module.DATASET]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rounds"] == 2 and np.isfinite(summary["final"]["loss"])
    table = json.loads((out / "partitions.json").read_text())
    counts_ = np.array(table["counts"])
    assert counts_.shape[0] == sum(counts)
    # Devices of the later class hold the bigger partitions.
    if len(counts) == 2:
        sizes = counts_.sum(axis=1)
        assert sizes[: counts[0]].max() <= sizes[counts[0]:].min()
    page = write_report([out])
    assert (page.parent / "labels.png").is_file() and "labels per device" in page.read_text()


@pytest.mark.parametrize("name", sorted(CASES))
def test_without_the_hub_a_run_stops_at_load_with_one_line(name) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_HOME": "/nonexistent-fedactors-test", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-m", "fedactors", f"scenarios/{name}", "--rounds", "1",
                           "--quiet", "--no-report"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    module = load_module(ROOT / "scenarios" / name)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(lines) == 1 and f"could not fetch dataset {module.DATASET!r}" in lines[0], proc.stderr
