"""Differential privacy for federated averaging.

Modules (imported explicitly; each pulls in TensorFlow or dp-accounting only
when used):

* :mod:`fedactors.privacy.dp_queries`: tensorflow-privacy DPQuery classes (import workaround).
* :mod:`fedactors.privacy.dp_mean`: ``DPMean``, DP-FedAvg aggregation.
* :mod:`fedactors.privacy.accounting`: ``PrivacyLedger``, (epsilon, delta) accounting.
"""

import importlib
from typing import Any

from fedactors.privacy.spec import Privacy

#: Names imported on first use (they pull in TensorFlow or dp-accounting).
_LAZY = {"DPMean": "fedactors.privacy.dp_mean", "AdaptiveClipping": "fedactors.privacy.dp_mean"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fedactors.privacy' has no attribute {name!r}")


__all__ = ["AdaptiveClipping", "DPMean", "Privacy"]
