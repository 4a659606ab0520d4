"""``python -m fedactors SCENARIO [--rounds N] [--seed S] [--out DIR]``.

Bad input gets one line naming the file and field, and exit status 2: no
traceback for a mistake in a scenario.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from fedactors.errors import ScenarioError

EXIT_BAD_INPUT = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fedactors",
        description="Simulate federated learning on a fleet of devices, on a virtual clock.",
        epilog="Other commands: `python -m fedactors report DIR [DIR ...]`.",
    )
    parser.add_argument("scenario", type=Path, help="a scenario file, e.g. scenarios/smart_home.py")
    parser.add_argument("--rounds", type=_positive_int, help="override the scenario's round count")
    parser.add_argument("--seed", type=_seed, help="override the scenario's seed")
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<scenario>-seed<S>)")
    parser.add_argument("--no-device-events", action="store_true",
                        help="log only server events (for fleets of many thousands)")
    parser.add_argument("--executor", choices=("auto", "vectorized", "sequential"), default="auto",
                        help="local training: whole cohort at once (auto/vectorized) or per device")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if argv and argv[0] == "report":
        from fedactors.reporting.report import main as report_main

        return report_main(argv[1:])
    args = run_parser().parse_args(argv)
    try:
        return _run(args)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _run(args: argparse.Namespace) -> int:
    from fedactors.reporting.terminal import RunDisplay
    from fedactors.scenarios.loader import load_scenario

    scenario = load_scenario(args.scenario)
    seed = scenario.seed if args.seed is None else args.seed
    out = args.out or Path("runs") / f"{scenario.name}-seed{seed}"

    from fedactors.simulation import RunOptions, run_scenario

    rounds = args.rounds or scenario.rounds.count
    options = RunOptions(seed=seed, rounds=rounds, out_dir=out,
                         device_events=not args.no_device_events, executor=args.executor)
    with RunDisplay(scenario.name, rounds, enabled=not args.quiet) as display:
        result = run_scenario(scenario, options, on_round=[display.update])
        display.finish(result.summary, result.records, out)
    return 0
