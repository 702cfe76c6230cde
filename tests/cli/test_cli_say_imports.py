"""`labmate say` for a command that starts no job loads no job machinery: Celery, Alembic and MLflow
are a third of a second the person would wait for nothing (docs/performance.md, bench_terminal),
and it imports only its own verb's handlers (not clean-up's models, or YAML for launch projects).
The Slack process doesn't import pydantic at all: settings are msgspec structs (typer, which only
the terminal uses, imports pydantic itself)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, sys
from labmate.cli import main
sys.argv = ["labmate", "say", "help"]
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"exit": code, "imported": sorted(m for m in ("celery", "kombu", "alembic", "mlflow", "yaml", "bot.handlers.cleanup") if m in sys.modules)}))
"""


@pytest.mark.parametrize("command", ["help", "decisions release"])
def test_a_command_without_a_job_imports_no_job_machinery(lab_home, migrated, command) -> None:
    env = {**os.environ, "LABMATE_HOME": str(lab_home)}  # its knowledge base at head: no Alembic either
    probe = PROBE.replace('"say", "help"', f'"say", {command!r}')
    out = subprocess.run([sys.executable, "-c", probe], env=env, check=True, capture_output=True, text=True, timeout=120)
    *answer, last = out.stdout.strip().splitlines()
    assert json.loads(last) == {"exit": 0, "imported": []}, out.stdout + out.stderr
    assert answer, "the command answered"


def test_the_slack_process_reads_its_settings_without_pydantic(lab_home) -> None:
    probe = "import sys, bot.slack_app; from labmate.settings import get_settings; get_settings(); print('pydantic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False"
