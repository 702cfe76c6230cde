"""The Python of labmate's own environment, for the processes it starts (a training run's `python`,
`mlflow gc`).

`sys.executable` is that interpreter in a normal process, but not inside uWSGI: `labmate serve`'s
workers embed Python, and `sys.executable` names the base installation's interpreter, which lacks the
virtualenv's packages (a run launched on the served app's embedded worker failed: no module named
mlflow). `sys.prefix` is still the virtualenv there, so its interpreter is used.
"""

from __future__ import annotations

import sys
from pathlib import Path


def python() -> str:
    if sys.prefix != sys.base_prefix and not Path(sys.executable).is_relative_to(sys.prefix):
        for name in (f"python{sys.version_info.major}.{sys.version_info.minor}", "python3", "python"):
            candidate = Path(sys.prefix) / "bin" / name
            if candidate.exists():
                return str(candidate)
    return sys.executable
