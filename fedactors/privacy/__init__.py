"""Differential privacy for federated averaging.

Modules (imported explicitly; each pulls in TensorFlow or dp-accounting only
when used):

* :mod:`fedactors.privacy.dp_queries`: tensorflow-privacy DPQuery classes (import workaround).
* :mod:`fedactors.privacy.dp_mean`: ``DPMean.fixed`` and
  ``DPMean.adaptive_clipping``, which build a DP-FedAvg aggregator (a
  ``DPMechanism``, :mod:`~fedactors.privacy.mechanism`); one mechanism per module:
  :mod:`~fedactors.privacy.fixed_clip` (``FixedClipDPMean``),
  :mod:`~fedactors.privacy.adaptive_clip` (``AdaptiveClipDPMean``,
  ``AdaptiveClipping``), :mod:`~fedactors.privacy.distributed_noise`
  (``DistributedDPMean``), sharing :mod:`~fedactors.privacy.gaussian_mean` and
  :mod:`~fedactors.privacy.noise`.
* :mod:`fedactors.privacy.accounting`: ``PrivacyLedger``, (epsilon, delta) accounting.
* DP-FTRL (``DPMean.tree``): :mod:`~fedactors.privacy.tree_mean` (``TreeDPMean``),
  :mod:`~fedactors.privacy.adaptive_tree` (``AdaptiveTreeDPMean``, with ``adaptive=``),
  :mod:`~fedactors.privacy.tree_accounting` (``TreeLedger``: ε from recorded
  participation), :mod:`~fedactors.privacy.tree_budget` (``TreeBudget``: the run's
  budget and the ``min_separation`` rule).
* :mod:`fedactors.privacy.canaries`: canary clients and the one-shot empirical
  epsilon estimate (``Privacy(canaries=k)``; ``estimate_epsilon``,
  ``epsilon_between_gaussians``).
"""

import importlib
from typing import Any

from fedactors.privacy.spec import Privacy

#: Names imported on first use (they pull in TensorFlow or dp-accounting).
_LAZY = {
    "DPMean": "fedactors.privacy.dp_mean",
    "FixedClipDPMean": "fedactors.privacy.fixed_clip",
    "AdaptiveClipDPMean": "fedactors.privacy.adaptive_clip",
    "AdaptiveClipping": "fedactors.privacy.adaptive_clip",
    "DistributedDPMean": "fedactors.privacy.distributed_noise",
    "DPMechanism": "fedactors.privacy.mechanism",
    "DPMeanState": "fedactors.privacy.mechanism",
    "EmpiricalEstimate": "fedactors.privacy.canaries",
    "delta_between_gaussians": "fedactors.privacy.canaries",
    "epsilon_between_gaussians": "fedactors.privacy.canaries",
    "estimate_epsilon": "fedactors.privacy.canaries",
    "TreeDPMean": "fedactors.privacy.tree_mean",
    "TreeMeanState": "fedactors.privacy.tree_mean",
    "AdaptiveTreeDPMean": "fedactors.privacy.adaptive_tree",
    "TreeLedger": "fedactors.privacy.tree_accounting",
    "TreeStats": "fedactors.privacy.tree_accounting",
    "tree_rdp": "fedactors.privacy.tree_accounting",
    "sensitivity_bound": "fedactors.privacy.tree_accounting",
    "most_participations": "fedactors.privacy.tree_accounting",
    "TreeBudget": "fedactors.privacy.tree_budget",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fedactors.privacy' has no attribute {name!r}")


__all__ = [
    "AdaptiveClipDPMean",
    "AdaptiveClipping",
    "AdaptiveTreeDPMean",
    "DPMean",
    "DPMeanState",
    "DPMechanism",
    "DistributedDPMean",
    "EmpiricalEstimate",
    "FixedClipDPMean",
    "Privacy",
    "TreeBudget",
    "TreeDPMean",
    "TreeLedger",
    "TreeMeanState",
    "TreeStats",
    "delta_between_gaussians",
    "epsilon_between_gaussians",
    "estimate_epsilon",
    "most_participations",
    "sensitivity_bound",
    "tree_rdp",
]
