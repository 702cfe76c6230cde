"""Stale-run clean-up: rules and protections, the scan on the run index, proposals and their answers."""
