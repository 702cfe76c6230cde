"""Loading a logged MLflow model as a callable (the regression engine's `models:/…` and `runs:/…` targets)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from tasks.mlflow_io import process_uris


def load_pyfunc(uri: str, tracking_uri: str | None = None) -> Callable[[Any], Any]:
    """The model's `predict`; raises what MLflow raises (MlflowException, OSError, the model's own
    import errors), which the caller turns into a message. `tracking_uri` points MLflow at another
    store while loading, then restores the process-wide setting."""
    import mlflow.pyfunc

    # MLflow's advice to annotate `predict` is for whoever logs the model (signature inference); a
    # regression run only calls it, and the advice, in raw colour codes, looked like a fault. MLflow
    # shows it under its own `simplefilter("once")`, which beats any filter, so the load's warnings
    # are recorded and all the others shown again.
    with warnings.catch_warnings(record=True) as caught:
        if tracking_uri:
            with process_uris(tracking_uri):
                predict = mlflow.pyfunc.load_model(uri).predict
        else:
            predict = mlflow.pyfunc.load_model(uri).predict
    for warning in caught:
        if "Add type hints to the `predict` method" not in str(warning.message):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return predict
