"""The image's install step, run here as a plain `pip install` into a throwaway venv: the files the
Dockerfile copies, the pip command it runs, then the commands its services run (`--help` for the
servers, a real `db upgrade`, `say help` and the demo) from the installed, non-editable package."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.compose import DOCKERFILE, ROOT

DOCKER = DOCKERFILE.read_text()


@pytest.mark.slow
def test_the_image_install_step_gives_working_services(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    for sources, dest in re.findall(r"^COPY (.+) (\S+)$", DOCKER, re.M):
        for source in sources.split():
            target = app / dest if dest not in ("./", ".") else app / source
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "mlruns"))
            else:
                shutil.copy(ROOT / source, app / source)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (pip_args,) = re.findall(r"RUN pip install ([^\n\\&]+)", DOCKER)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--no-cache-dir", "-q", *shlex.split(pip_args)],
        cwd=app, check=True, timeout=900,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABMATE_", "MLFLOW_", "SLACK_", "VIRTUAL_ENV"))}
    env.update(LABMATE_HOME=str(tmp_path / "home"), PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")

    def run(*argv: str, cwd: Path = app) -> str:
        result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{argv}: {result.stdout}\n{result.stderr}"
        return result.stdout

    # From outside /app: `python -c` puts the working directory first on sys.path (console scripts don't).
    site = run(str(venv / "bin" / "python"), "-c", "import labmate; print(labmate.__file__)", cwd=tmp_path)
    assert str(venv) in site  # the installed copy, not this checkout
    for argv in (["mlflow", "server", "--help"], ["labmate", "serve", "--help"], ["labmate", "worker", "--help"],
                 ["labmate", "beat", "--help"], ["labmate", "health", "--help"]):
        run(*argv)
    assert "knowledge base at revision" in run("labmate", "db", "upgrade")  # migrations shipped as package data
    assert "decide" in run("labmate", "say", "help")  # the templates too
    assert "Created" in run("labmate", "demo")  # examples/ from the image's WORKDIR
