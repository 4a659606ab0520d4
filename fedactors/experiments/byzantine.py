"""Run smart_home_byzantine's variants and print final accuracy per aggregation stage.

    python -m fedactors.experiments.byzantine [--rounds N] [--seeds 0 1 ...]

The figures in docs/robustness.md come from this script.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only these variants of scenarios/smart_home_byzantine.py")
    args = parser.parse_args(argv)
    from fedactors.training.quiet import import_tensorflow_quietly

    import_tensorflow_quietly()  # its banner would bury the table
    from fedactors.scenarios.loader import load_module
    from fedactors.simulation import RunOptions, run_scenario

    smart_home_byzantine = load_module(ROOT / "scenarios" / "smart_home_byzantine.py")
    unknown = sorted(set(args.only or ()) - set(smart_home_byzantine.VARIANTS))
    if unknown:
        parser.error(f"--only: no variant named {', '.join(map(repr, unknown))} "
                     f"(the variants: {', '.join(map(repr, smart_home_byzantine.VARIANTS))})")

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
