"""Regression conversations: run a suite of sample conversations against a baseline and a candidate.

Kept import-light on purpose: the pytest plugin and the CLI import submodules lazily.
"""
