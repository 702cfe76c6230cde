"""Experiments in chat: the jobs behind summary, compare, find, best and runs (workers only)."""
