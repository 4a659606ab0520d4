"""Secure aggregation (Bonawitz et al. 2017; SecAgg+ of Bell et al. 2020) as pure state machines.

Nothing here does I/O or awaits: each protocol step takes a state and the
messages that arrived and returns a new state and the messages to send, so the
actor runtime decides *when* things happen and this package decides *what*.
"""
