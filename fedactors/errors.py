"""Errors a user can act on: each names what is wrong and where."""

from __future__ import annotations


class ConfigError(ValueError):
    """An invalid option in a scenario or a named constructor.

    ``field`` is the dotted name of the offending option so that the CLI can
    say *which* value is wrong, not just that something is.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def within(self, prefix: str) -> ConfigError:
        """The same error, with ``prefix`` prepended to the field path."""
        return ConfigError(f"{prefix}.{self.field}" if self.field else prefix, self.message)


class ScenarioError(Exception):
    """A scenario file that cannot be loaded or run; the CLI prints it and exits 2."""


class SimulationStalled(RuntimeError):
    """Every actor waits and no timer is pending: the simulation can never advance."""
