"""What a person at a terminal sees: a live progress bar, then a summary table.

The bar is drawn only when stdout is a terminal; the table is always printed
(as plain text when piped) unless the run is quiet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedactors.reporting.units import (
    delta_text,
    empirical_text,
    format_duration,
    neighbors_text,
)


class RunDisplay:
    def __init__(self, name: str, rounds: int, enabled: bool = True,
                 console: Optional[Console] = None) -> None:
        self.console = console or Console()
        self.enabled = enabled
        self.rounds = rounds
        self.name = name
        self._progress: Optional[Progress] = None
        self._task = None
        # Evaluation may skip rounds (eval_every); keep showing the latest value.
        self._latest: dict[str, float] = {}

    def __enter__(self) -> RunDisplay:
        if self.enabled and self.console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("round"),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=self.console,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.name, total=self.rounds, status="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def status(self, row: dict) -> str:
        """The text after the bar: simulated time, reports, latest accuracy (or loss)."""
        for key in ("accuracy", "loss"):
            if key in row:
                self._latest[key] = row[key]
        status = f"t={format_duration(row['time'])}  reported {row['reported']}/{row['selected']}"
        if "accuracy" in self._latest:
            status += f"  acc {self._latest['accuracy']:.3f}"
        elif "loss" in self._latest:
            status += f"  loss {self._latest['loss']:.4g}"
        return status

    def update(self, row: dict) -> None:
        if self._progress is None:
            return
        self._progress.update(self._task, completed=row["round"], status=self.status(row))

    def finish(self, summary: dict, records: list[dict], out: Path) -> None:
        if not self.enabled:
            return
        # Under system randomness the seed alone does not replay the run: say so where it is shown.
        system = ", system randomness" if summary.get("randomness") == "system" else ""
        table = Table(title=f"{summary['scenario']} (seed {summary['seed']}{system})")
        table.add_column("measure")
        table.add_column("value", justify="right")
        table.add_row("rounds", f"{summary['rounds']} ({summary['stopped']})")
        table.add_row("simulated time", format_duration(summary["simulated_seconds"]))
        table.add_row("wall time", f"{summary['wall_seconds']:.1f} s")
        for key in ("selected", "reported", "dropped", "late", "surplus", "refused"):
            # (.get: rows written before a key existed, FedBuff's without surplus.)
            table.add_row(f"{key} (all rounds)", str(sum(r.get(key, 0) for r in records)))
        for key, value in summary["final"].items():
            table.add_row(f"final {key}", f"{value:.4f}")
        if "privacy" in summary:
            eps = summary["privacy"]["epsilon"]
            held = "" if summary["privacy"]["assumption_held"] else " (assumption broken)"
            relation = neighbors_text(summary["privacy"])
            over = f" ({relation} neighbours)" if relation else ""
            table.add_row(f"ε at δ={delta_text(summary['privacy'])}",
                          ("∞" if eps is None else f"{eps:.3f}") + over + held)
            if "epsilon_guaranteed" in summary["privacy"]:  # the bound the broken one leaves
                held_eps = summary["privacy"]["epsilon_guaranteed"]
                table.add_row("ε that holds (no sampling assumed)",
                              "∞" if held_eps is None else f"{held_eps:.3f}")
            if "empirical" in summary["privacy"]:
                table.add_row("ε empirical (canaries, estimate)",
                              empirical_text(summary["privacy"]["empirical"]))
        table.add_row("weights sha256", summary["weights_sha256"][:16] + "…")
        table.add_row("outputs", str(out))
        self.console.print(table)

