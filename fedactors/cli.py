"""``python -m fedactors SCENARIO [--rounds N] [--seed S] [--out DIR]``.

Bad input gets one line naming the file and field, and exit status 2: no
traceback for a mistake in a scenario.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from fedactors.errors import EXIT_BAD_INPUT, ConfigError, ScenarioError
from fedactors.seeding import SYSTEM
from fedactors.training.choice import BACKENDS, EXECUTORS
from fedactors.training.quiet import import_tensorflow_quietly
from fedactors.validation import whole_number

_positive_int = whole_number(1)
_seed = whole_number(0)


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fedactors",
        description="Simulate federated learning on a fleet of devices, on a virtual clock.",
        epilog="Other commands: `python -m fedactors report DIR [DIR ...]`.",
    )
    parser.add_argument("scenario", type=Path, nargs="?",
                        help="a scenario file, e.g. scenarios/smart_home.py")
    parser.add_argument("--rounds", type=_positive_int, help="override the scenario's round count")
    parser.add_argument("--seed", type=_seed, help="override the scenario's seed")
    parser.add_argument("--system-randomness", action="store_true",
                        help="draw DP noise and secure-aggregation secrets from the operating "
                        "system's CSPRNG, not the seed (the scenario's randomness='system'): "
                        "secret, and the run is not reproducible; docs/privacy.md")
    parser.add_argument("--out", type=Path, help="run directory (default: runs/<scenario>-seed<S>)")
    parser.add_argument("--no-device-events", action="store_true",
                        help="log only server events (for fleets of many thousands)")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="where local training runs: this process, or Ray workers "
                        "(a local Ray instance, or the cluster at $RAY_ADDRESS); docs/distributed.md")
    parser.add_argument("--ray-workers", type=_positive_int,
                        help="Ray workers for --backend ray (default: every CPU)")
    parser.add_argument("--executor", choices=EXECUTORS,
                        help="local training: whole cohort at once (auto/vectorized) or per device")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    parser.add_argument("--resume", type=Path, metavar="DIR",
                        help="continue the run checkpointed in DIR (same scenario and seed)")
    parser.add_argument("--no-report", action="store_true",
                        help="skip the figures and HTML page written to DIR/report at the end")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's own start-up output (hidden by default)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if argv and argv[0] == "report":
        from fedactors.reporting.report import main as report_main

        return report_main(argv[1:])
    parser = run_parser()
    args = parser.parse_args(argv)
    if args.scenario is None and args.resume is None:
        parser.error("the scenario file is required (or --resume DIR)")
    try:
        if not args.verbose:
            import_tensorflow_quietly()
        return _run(args)
    except (ScenarioError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        # Ctrl-C while TensorFlow loads or the scenario is built, before the run's own
        # handler (StopOnSignal) is in place: one line, no traceback; no round had run.
        print("\ninterrupted before the first round", file=sys.stderr)
        return 128 + signal.SIGINT


def _run(args: argparse.Namespace) -> int:
    from fedactors.reporting.terminal import RunDisplay
    from fedactors.scenarios.loader import load_scenario

    path, seed, device_events = args.scenario, args.seed, not args.no_device_events
    rounds = args.rounds
    system_randomness = args.system_randomness
    if args.resume is not None:
        from fedactors.runtime import checkpoint

        if args.out is not None and args.out != args.resume:
            raise ScenarioError(f"--out {args.out} and --resume {args.resume} name different runs")
        saved = checkpoint.load(args.resume)
        path = path or Path(saved.scenario_path)
        seed = saved.fingerprint.seed if seed is None else seed
        # A resumed run replays with the options it was started with.
        started = dict(saved.fingerprint.options)
        device_events = started.get("device_events", device_events)
        args.executor = args.executor or started.get("executor")
        args.backend = args.backend or started.get("backend")
        system_randomness = system_randomness or started.get("randomness") == SYSTEM
        rounds = rounds or saved.rounds_target
    if args.ray_workers is not None and args.backend != "ray":
        # Said rather than ignored: the user expects two workers and would get none.
        raise ScenarioError(f"--ray-workers {args.ray_workers}: only with --backend ray "
                            f"(training runs in this process with --backend "
                            f"{args.backend or 'local'})")
    scenario = load_scenario(path)
    if system_randomness:
        # The flag is the scenario field: one setting, recorded in the checkpoint's fingerprint.
        scenario = dataclasses.replace(scenario, randomness=SYSTEM)
    seed = scenario.seed if seed is None else seed
    out = args.resume or args.out or Path("runs") / f"{scenario.name}-seed{seed}"

    from fedactors.simulation import RunOptions, run_scenario
    from fedactors.simulation.outputs import check_writable

    rounds = rounds or scenario.rounds.count
    check_writable(out)
    options = RunOptions(seed=seed, rounds=rounds, out_dir=out, device_events=device_events,
                         scenario_path=path, resume=args.resume is not None,
                         backend=args.backend or "local", ray_workers=args.ray_workers,
                         executor=args.executor or "auto")
    from fedactors.reporting.tensorboard import TensorBoardWriter

    metric_names = ("loss", *(m for m in scenario.metrics if isinstance(m, str)))
    with RunDisplay(scenario.name, rounds, enabled=not args.quiet) as display, \
            TensorBoardWriter(out / "tensorboard", metric_names) as tensorboard, \
            StopOnSignal() as interrupt:
        result = run_scenario(scenario, options, on_round=[display.update, tensorboard, interrupt],
                              interrupt=interrupt.asked)
        display.finish(result.summary, result.records, out)
    # Weakened guarantees and fallbacks: always shown, --quiet or not.
    for line in result.summary["warnings"]:
        print(f"warning: {line}", file=sys.stderr)
    if not args.no_report:
        from fedactors.reporting.report import write_report

        page = write_report([out], out / "report")
        if not args.quiet:
            print(f"report: {page}")
    if interrupt.signal is not None:
        resume = (f"; continue with: python -m fedactors --resume {out}"
                  if (out / "checkpoint.pkl").exists() else
                  " (no checkpoint yet: a rerun starts afresh)")
        print(f"interrupted: stopped after round {result.summary['rounds']}{resume}",
              file=sys.stderr)
        return 128 + interrupt.signal
    return 0


class StopOnSignal:
    """Ctrl-C (SIGINT) or SIGTERM: finish the round in progress, then stop.

    The first signal only asks: the run stops at the next round boundary (a
    FedBuff run: at the end of the current simulated instant, whether or not a
    server update happened in it), after its
    checkpoint, and writes its summary (``stopped:
    "interrupted"``) and report; the exit status is 128 + the signal (130 for
    Ctrl-C, 143 for SIGTERM). A second signal exits at once: every file the run
    trusts is written atomically or cut back to the checkpoint on ``--resume``.
    """

    def __init__(self) -> None:
        self.signal: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:
            os._exit(128 + signum)  # the second one: now
        self.signal = signum
        print("\nstopping after this round (again to stop now)", file=sys.stderr)

    def __call__(self, row: dict) -> Optional[str]:
        return self.asked()

    def asked(self) -> Optional[str]:
        """Polled between events (``run_scenario(interrupt=...)``): a FedBuff run whose
        updates never come still stops at the end of the current instant."""
        return "interrupted" if self.signal is not None else None
