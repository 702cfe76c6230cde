"""Loading a logged MLflow model as a callable (the regression engine's `models:/…` and `runs:/…` targets)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tasks.mlflow_io import process_uris


def load_pyfunc(uri: str, tracking_uri: str | None = None) -> Callable[[Any], Any]:
    """The model's `predict`; raises what MLflow raises (MlflowException, OSError, the model's own
    import errors), which the caller turns into a message. `tracking_uri` points MLflow at another
    store while loading, then restores the process-wide setting."""
    import mlflow.pyfunc

    if tracking_uri:
        with process_uris(tracking_uri):
            return mlflow.pyfunc.load_model(uri).predict
    return mlflow.pyfunc.load_model(uri).predict
