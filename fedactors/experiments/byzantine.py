"""Run smart_home_byzantine's variants and print final accuracy per aggregation stage.

    python -m fedactors.experiments.byzantine [--rounds N] [--seeds 0 1 ...]

The figures in docs/robustness.md come from this script.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    from fedactors.scenarios.loader import load_module
    from fedactors.simulation import RunOptions, run_scenario

    smart_home_byzantine = load_module(ROOT / "scenarios" / "smart_home_byzantine.py")

    print("| stage | seed | accuracy after 10 / 20 / final rounds | final loss |")
    print("|---|---|---|---|")
    for name, scenario in smart_home_byzantine.VARIANTS.items():
        if args.only and name not in args.only:
            continue
        for seed in args.seeds:
            result = run_scenario(scenario, RunOptions(seed=seed, rounds=args.rounds,
                                                       device_events=False))
            acc = [r.get("accuracy") for r in result.records]
            at = [acc[i - 1] for i in (10, 20) if i <= len(acc)] + [acc[-1]]
            print(f"| {name} | {seed} | {' / '.join(f'{a:.3f}' for a in at)} | "
                  f"{result.summary['final']['loss']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
