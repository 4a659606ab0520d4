"""The one place an executor is chosen: by ``(executor, backend)``.

``executor`` says how local training is batched, ``backend`` where it runs
(``RunOptions.executor`` / ``--executor`` and ``RunOptions.backend`` /
``--backend``; docs/training.md, docs/distributed.md). ``auto`` and
``vectorized`` both vectorize a cohort when the model allows it and fall back
to one device at a time, saying why, when it does not (``vectorized`` is kept
as a name for scripts that want to say what they expect).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional

from fedactors.errors import ConfigError

if TYPE_CHECKING:  # the CLI reads the names below before TensorFlow is imported
    from fedactors.training.executor import Executor
    from fedactors.training.model_runner import ModelRunner
    from fedactors.training.spec import ModelSpec

log = logging.getLogger(__name__)

EXECUTORS = ("auto", "vectorized", "sequential")
BACKENDS = ("local", "ray")


def executor_for(executor: str, backend: str, runner: ModelRunner, *,
                 spec: Optional[ModelSpec] = None, keras_seed: int = 0,
                 ray_workers: Optional[int] = None) -> Executor:
    """The executor for ``(executor, backend)``; Ray needs the model ``spec``."""
    if executor not in EXECUTORS:
        raise ConfigError("executor", f"must be one of {EXECUTORS}, got {executor!r}")
    if backend not in BACKENDS:
        raise ConfigError("backend", f"must be one of {BACKENDS}, got {backend!r}")
    if backend == "ray":
        if spec is None:
            raise ConfigError("backend", "'ray' needs the model spec to build its workers")
        from fedactors.training.ray_executor import RayExecutor

        return RayExecutor(spec, runner.training, keras_seed, ray_workers)
    from fedactors.training.executor import SequentialExecutor

    if executor == "sequential":
        return SequentialExecutor(runner)
    from fedactors.training.batched import Unsupported
    from fedactors.training.vectorized import VectorizedExecutor

    try:
        return VectorizedExecutor(runner)
    except Unsupported as exc:
        log.warning("vectorized training unavailable (%s); using the per-device loop", exc)
        fallback = SequentialExecutor(runner)
        fallback.fallback_reason = str(exc)
        return fallback
