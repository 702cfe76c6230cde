"""What the clean-up asks of MLflow: the runs behind registered model versions, a team filter the run
index can't evaluate, marking an orphan FAILED, soft delete, restore, the keep tag, and the garbage
collection that removes deleted runs for good (MLflow's own `mlflow gc`, artifacts included)."""

from __future__ import annotations

import logging
import os
import subprocess
from typing import TYPE_CHECKING, Any

from labmate import interpreter
from tasks.mlflow_io import client, records_by_ids, run_reader, tracking_uri

if TYPE_CHECKING:
    from models.run_index import RunRecord

log = logging.getLogger(__name__)

KEEP_TAG = "keep"
NOTE_TAG = "mlflow.note.content"
CLEANUP_NOTE_TAG = "labmate.cleanup"
GC_TIMEOUT_S = 600


def registered_run_ids() -> set[str]:
    """Every run a registered model version was made from (all models, all pages)."""
    c = client()
    found: set[str] = set()
    token = None
    while True:
        page = c.search_model_versions(max_results=1000, page_token=token)
        found.update(v.run_id for v in page if v.run_id)
        token = page.token
        if not token:
            return found


def filter_run_ids(experiment_id: str, filter_string: str) -> set[str]:
    """Active runs an MLflow filter matches (for filters the run index can't evaluate)."""
    from mlflow.entities import ViewType

    c = client()
    found: set[str] = set()
    token = None
    while True:
        page = c.search_runs([experiment_id], filter_string, run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
                             page_token=token)
        found.update(r.info.run_id for r in page)
        token = page.token
        if not token:
            return found


def parse_filter(filter_string: str) -> list[dict[str, Any]]:
    """MLflow's own parse of a filter string (raises MlflowException when it isn't one)."""
    from mlflow.utils.search_utils import SearchUtils

    return list(SearchUtils.parse_search_filter(filter_string))


def mark_failed(run_id: str, note: str) -> None:
    """An orphan (RUNNING, its process gone): FAILED, with a note saying why and by whom."""
    c = client()
    c.set_tag(run_id, CLEANUP_NOTE_TAG, note)
    current = c.get_run(run_id).data.tags.get(NOTE_TAG, "")
    c.set_tag(run_id, NOTE_TAG, (current + "\n\n" if current else "") + note)
    c.set_terminated(run_id, status="FAILED")


def current(run_ids: list[str]) -> dict[str, RunRecord]:
    """The runs as MLflow has them now (deleted ones too), by id: plain SELECTs by primary key on a SQL
    store (the run index's reader), searches of 100 ids through the client otherwise."""
    from tasks.mlflow_io.reader import SqlReader

    if not run_ids:
        return {}
    reader = run_reader()
    found = reader.records("", run_ids) if isinstance(reader, SqlReader) else records_by_ids(run_ids)
    return {r.run_id: r for r in found}


def delete(run_id: str) -> None:
    """MLflow's soft delete (idempotent: a deleted run stays deleted)."""
    client().delete_run(run_id)


def restore(run_id: str) -> None:
    client().restore_run(run_id)


def keep(run_id: str) -> None:
    client().set_tag(run_id, KEEP_TAG, "true")


def gc(run_ids: list[str]) -> None:
    """Remove deleted runs for good, artifacts included: `mlflow gc` on this tracking store."""
    if not run_ids:
        return
    from labmate.settings import get_settings

    backend = get_settings().cleanup.gc_backend_store_uri or tracking_uri()
    if backend.startswith(("http://", "https://")):
        raise RuntimeError("mlflow gc needs the tracking server's database: set [cleanup] gc_backend_store_uri")
    command = [interpreter.python(), "-m", "mlflow", "gc", "--backend-store-uri", backend, "--run-ids", ",".join(run_ids)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri()}  # artifacts behind a server's proxy are deleted through it
    done = subprocess.run(command, capture_output=True, text=True, timeout=GC_TIMEOUT_S, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"mlflow gc failed ({done.returncode}): {done.stderr.strip()[-500:]}")
