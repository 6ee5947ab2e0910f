"""Temporal workflow code only: deterministic, no I/O, no wall clock, no randomness.

`workflows.contracts` is the typed contract of every workflow, activity, signal, update and query.
"""
