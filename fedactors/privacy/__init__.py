"""Differential privacy for federated averaging.

Modules (imported explicitly; each pulls in TensorFlow or dp-accounting only
when used):

* :mod:`fedactors.privacy.dp_queries`: tensorflow-privacy DPQuery classes (import workaround).
* :mod:`fedactors.privacy.dp_mean`: ``DPMean``, DP-FedAvg aggregation.
* :mod:`fedactors.privacy.accounting`: ``PrivacyLedger``, (epsilon, delta) accounting.
"""
