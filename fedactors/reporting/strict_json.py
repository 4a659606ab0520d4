"""JSON as RFC 8259 has it, for every file a run writes.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which no other
JSON reader accepts (jq, JavaScript, most dataframe loaders). A run meets
non-finite numbers legitimately (a diverging model's loss, an infinite ε with
no noise, the median norm of a round whose updates were NaN): they are written
as ``null``, at any depth. Finite values are written exactly as before, and
the common all-finite case pays one ``json.dumps`` only.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """``value`` with every non-finite float, at any depth, replaced by None (JSON null)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps(value, **kwargs)``, with non-finite numbers written as null."""
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except ValueError:  # a NaN or an infinity (rare): strict JSON has no word for it
        return json.dumps(finite(value), allow_nan=False, **kwargs)
