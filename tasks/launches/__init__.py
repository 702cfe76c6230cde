"""Launching training runs from chat: one launch (run.py), its card (cards.py), its process
(process.py), sweeps (sweeps.py), and the Celery tasks over them (jobs.py)."""
