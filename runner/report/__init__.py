"""Reporting: re-renders saved results (cells, figures, REPORT.md sections, the recommendation,
findings). Reads :mod:`runner.store`; never runs an experiment.
"""
