"""Run a scenario on the virtual clock and write its outputs.

* :mod:`~fedactors.simulation.options`: ``RunOptions`` (what a run is asked to do) and
  ``RunResult``.
* :mod:`~fedactors.simulation.assembly`: the world from a scenario (data, model, actors).
* :mod:`~fedactors.simulation.recorder`: each release's row through a chain of steps
  (row, traffic, write, checkpoint, callbacks, limits).
* :mod:`~fedactors.simulation.outputs`: the run directory.
* :mod:`~fedactors.simulation.run`: ``run_scenario``, which ties them together.
"""

from fedactors.simulation.assembly import Actors, assemble
from fedactors.simulation.options import WALL_CLOCK_KEYS, RunOptions, RunResult, settings_sha256
from fedactors.simulation.run import run_scenario

__all__ = ["WALL_CLOCK_KEYS", "Actors", "RunOptions", "RunResult", "assemble", "run_scenario",
           "settings_sha256"]
