"""The one exception of the batched math: what it cannot reproduce faithfully."""

from __future__ import annotations


class Unsupported(Exception):
    """The model, loss or optimizer has something the batched math does not cover."""
