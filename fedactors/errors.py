"""Errors a user can act on: each names what is wrong and where."""

from __future__ import annotations

#: The exit status of every command (run, report, experiments) for bad input.
EXIT_BAD_INPUT = 2


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


def stage_label(stage: object) -> str:
    """How a refusal names ``stage`` (an aggregation stage, say): its repr when its class
    wrote one (every built-in stage does), else its class name, not
    ``<module.Class object at 0x...>``."""
    if type(stage).__repr__ is object.__repr__:
        return type(stage).__name__
    return repr(stage)


class ScenarioError(Exception):
    """A scenario file that cannot be loaded or run; the CLI prints it and exits 2."""


class SimulationStalled(RuntimeError):
    """Every actor waits and no timer is pending: the simulation can never advance."""


#: Lines of TensorFlow's error text that locate the failure rather than state it.
_LOCATING = ("File ", "[[", "Detected at node", "Graph execution error", "Traceback")


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, however long a trace TensorFlow put in the message.

    TensorFlow's graph errors carry the Python stack that built the op and the
    node names; what the user needs is the statement itself (``indices[0] = 99
    is not in [0, 7)``), which is the last line that does not locate.
    """
    import re

    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", str(exc))
    text = re.sub(r"\s*\[Op:[^\]]*\].*$", "", text, flags=re.S)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    stated = [line for line in lines if not line.startswith(_LOCATING)]
    message = stated[-1] if stated else (lines[0] if lines else "")
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
