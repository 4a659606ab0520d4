"""What local training means in a scenario: the model, its loss, the optimizer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fedactors.errors import ConfigError
from fedactors.validation import positive_int


@dataclass(frozen=True)
class LocalTraining:
    """How each device trains on its own data in a round.

    ``optimizer`` is a zero-argument factory (e.g. ``lambda:
    keras.optimizers.SGD(0.1)``): every device starts each round with fresh
    optimizer state, as FedAvg prescribes.

    Args:
        epochs: Passes over the device's own data per round, >= 1. Default 1.
            Also scales simulated compute time, ``epochs * examples / compute``
            seconds.
        batch_size: Examples per local optimizer step, >= 1. Default 20. Each
            epoch is a fresh shuffle from the device's own generator; the last
            batch may be short.
        optimizer: Zero-argument factory returning a Keras optimizer. It is
            called when training is set up, not once per device; the
            optimizer's initial state is restored before each device's local
            training. Default (``None``): ``keras.optimizers.SGD(learning_rate=0.1)``.

    A bad value raises ``ConfigError`` at construction. The default factory
    imports Keras only when it is called.

    Examples:
        >>> from fedactors import LocalTraining
        >>> training = LocalTraining(epochs=2, batch_size=32)
        >>> training
        LocalTraining(epochs=2, batch_size=32)
        >>> callable(training.optimizer)  # the default factory: SGD(learning_rate=0.1)
        True
        >>> LocalTraining(batch_size=0)
        Traceback (most recent call last):
            ...
        fedactors.errors.ConfigError: batch_size: must be >= 1, got 0
    """

    epochs: int = 1
    batch_size: int = 20
    optimizer: Callable[[], Any] = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        positive_int("epochs", self.epochs)
        positive_int("batch_size", self.batch_size)
        if self.optimizer is None:
            object.__setattr__(self, "optimizer", _default_optimizer)
        elif not callable(self.optimizer):
            raise ConfigError(
                "optimizer",
                f"must be a zero-argument factory such as `lambda: keras.optimizers.SGD(0.1)`, "
                f"got {self.optimizer!r}",
            )


def _default_optimizer() -> Any:
    import keras

    return keras.optimizers.SGD(learning_rate=0.1)


@dataclass(frozen=True)
class ModelSpec:
    """The Keras model every device and the server build from the same recipe."""

    build: Callable[[], Any]
    loss: Any
    metrics: Sequence[Any] = ()

    def __post_init__(self) -> None:
        if not callable(self.build):
            raise ConfigError("model", f"must be a function returning a keras.Model, got {self.build!r}")
