"""benchmarks/run.py's bookkeeping: a partial run keeps the other rows, and the round's
decomposition adds up to the round it takes apart."""

from __future__ import annotations

import json

import pytest

from benchmarks import run


def _row(label: str, args: list[str], **fields) -> dict:
    return {"label": label, "args": args, "system": fields.pop("system", label),
            "kind": "mlp", "cohort": 10000, **fields}


def test_a_partial_run_replaces_only_its_own_rows(tmp_path, monkeypatch):
    results = tmp_path / "results.jsonl"
    old = [{"meta": "load", "start": [1.0, 1.0, 1.0], "time": 0.0},
           _row("limit", ["limit", "mlp", "10000", "3"], updates_per_s=1.0),
           _row("scale", ["fedactors", "mlp", "10000", "3", "100000"], updates_per_s=2.0)]
    results.write_text("".join(json.dumps(r) + "\n" for r in old))
    monkeypatch.setattr(run, "RESULTS", results)
    chosen = [("limit", ["python", "-m", "benchmarks.measure", "limit", "mlp", "10000", "3"], 1)]
    kept = run._kept_rows(chosen)
    assert old[0] in kept and old[2] in kept  # the load reading and the other row stay
    assert old[1] not in kept  # measured again


def test_no_earlier_results_keeps_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "RESULTS", tmp_path / "missing.jsonl")
    assert run._kept_rows([]) == []


def test_the_decomposition_adds_up_to_the_round():
    rounds = {"round_wall": [9.0, 1.5, 1.4, 1.6], "data_s": [9.0, 0.4, 0.4, 0.4],
              "executor_s": [9.0, 0.5, 0.5, 0.5], "train_s": [9.0, 0.3, 0.3, 0.3]}
    ours = _row("decompose", ["decompose"], system="fedactors-decomposed", devices=100000,
                rounds=4, **rounds)
    limit = _row("limit", ["limit"], round_wall=[5.0, 0.45, 0.45], data_s=[1.0, 0.2, 0.2],
                 train_s=[4.0, 0.25, 0.25])
    text = "\n".join(run._decomposition(run._group([ours, limit])))
    # The first round (tracing) is left out: 1.5 s is the median of the others.
    assert "| round | 1.50 s | 0.45 s |" in text
    assert "| the compiled training | 0.30 s | 0.25 s |" in text
    assert "| making the cohort's data | 0.40 s | 0.20 s |" in text
    assert "(batch orders, staging, copying out) | 0.20 s |" in text
    # 1.5 - 0.4 - 0.5 = 0.6 s of the rest, 60 us for each of 10,000 devices.
    assert "| 0.60 s (60 us per device) |" in text
    assert "leaves 0.35 s (35 us per device)" in text


@pytest.mark.parametrize("missing", ["decompose", "limit"])
def test_no_decomposition_without_both_rows(missing):
    rows = [_row("decompose", ["decompose"], system="fedactors-decomposed", devices=100000,
                 rounds=2, round_wall=[1, 1], data_s=[1, 1], executor_s=[1, 1], train_s=[1, 1]),
            _row("limit", ["limit"], round_wall=[1, 1], data_s=[1, 1], train_s=[1, 1])]
    assert run._decomposition(run._group([r for r in rows if r["label"] != missing])) == []
