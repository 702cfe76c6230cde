"""Loading a model for a regression run shows the model's own warnings, but not MLflow's advice to
annotate `predict` (meant for whoever logs it; in raw colour codes it looked like a fault)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ADVICE = "Add type hints to the `predict` method"


def _load(code: str, uri: str) -> str:
    return subprocess.run([sys.executable, "-c", code, uri], capture_output=True, text=True, timeout=120, check=True).stderr


def test_loading_skips_mlflows_type_hint_advice(shop_store: Path, tmp_path: Path):
    shutil.copy(shop_store / "mlflow.db", tmp_path / "mlflow.db")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plain = "import sys, mlflow; mlflow.set_tracking_uri(sys.argv[1]); mlflow.pyfunc.load_model('models:/shop@candidate')"
    ours = "import sys; from tasks.mlflow_io.models import load_pyfunc; load_pyfunc('models:/shop@candidate', sys.argv[1])"
    assert ADVICE in _load(plain, store)  # what MLflow prints for this unannotated model
    assert ADVICE not in _load(ours, store)
