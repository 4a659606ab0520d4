"""Reporting: the event log, run directories, warnings, the terminal, figures and the HTML
report. It imports nothing above it (tests/test_layers.py)."""
