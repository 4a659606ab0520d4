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
