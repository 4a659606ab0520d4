"""Shared test set-up: quiet TensorFlow, and async tests on the virtual clock."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from fedactors.runtime.loop import VirtualTimeLoop  # noqa: E402


def pytest_asyncio_loop_factories(config, item):
    """Every pytest-asyncio test runs on a fresh virtual-time loop."""
    return {"virtual_time": VirtualTimeLoop}
