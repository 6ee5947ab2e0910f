"""Temporal servers for the workflow tests live in tests/conftest.py (shared with the end-to-end tests)."""
