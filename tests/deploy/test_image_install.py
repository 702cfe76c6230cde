"""The image's install step as a plain `pip install`: the files the Dockerfile copies, the pip
command it runs (non-editable, into a throwaway venv), then the commands its services run from the
installed package: `--help` for the servers, a real `db upgrade`, `say help` and the demo.

Resolving and downloading the requirements again would take minutes; this test's venv sees the
test venv's packages instead (a path entry, not a site dir, so the checkout's editable install
stays out), installs labmate itself with `--no-deps` (building it as pip always does), and `pip check` then proves every declared
requirement is satisfied there. The full resolution of the same pyproject.toml is what the README's
test command runs before these tests (`pip install -e '.[dev]'`, which includes the server extra).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import site
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
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "mlruns", "*.egg-info"))
            else:
                shutil.copy(ROOT / source, app / source)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (own_site,) = (venv / "lib").glob("python3*/site-packages")
    (own_site / "test-venv-packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    python = str(venv / "bin" / "python")
    (pip_args,) = re.findall(r"RUN pip install ([^\n\\&]+)", DOCKER)
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--no-deps", *shlex.split(pip_args)],
        cwd=app, check=True, timeout=600,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABMATE_", "MLFLOW_", "SLACK_", "VIRTUAL_ENV"))}
    env.update(LABMATE_HOME=str(tmp_path / "home"), PATH=f"{venv / 'bin'}:{env.get('PATH', '')}")

    def run(*argv: str, cwd: Path = app) -> str:
        result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{argv}: {result.stdout}\n{result.stderr}"
        return result.stdout

    run(python, "-m", "pip", "check")  # every requirement labmate declares is installed
    # From outside /app: `python -c` puts the working directory first on sys.path (console scripts don't).
    installed = run(python, "-c", "import labmate, models; print(labmate.__file__, models.__file__)", cwd=tmp_path)
    assert installed.count(str(own_site)) == 2, installed  # the installed copy, not the checkout
    assert shutil.which("labmate", path=env["PATH"]) == str(venv / "bin" / "labmate")
    for argv in ([python, "-m", "mlflow", "server", "--help"], ["labmate", "serve", "--help"],
                 ["labmate", "worker", "--help"], ["labmate", "beat", "--help"], ["labmate", "health", "--help"]):
        run(*argv)
    assert "knowledge base at revision" in run("labmate", "db", "upgrade")  # migrations shipped as package data
    assert "decide" in run("labmate", "say", "help")  # the templates too
    assert "Created" in run("labmate", "demo")  # examples/ from the image's WORKDIR
