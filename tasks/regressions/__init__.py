"""Regression runs from chat: the jobs behind `/lab regress` and its card."""
