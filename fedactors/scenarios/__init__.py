"""Scenarios: the ``Scenario`` spec and the loader of scenario files."""
