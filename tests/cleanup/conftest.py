"""Clean-up: runs, experiments and knowledge-base rows, pure where possible."""
