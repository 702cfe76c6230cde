"""A project given as a git URI: the bot checks values against what labmate.toml declares (it has no
copy), the worker that runs it fetches it with MLflow Projects' own mechanism (here from a local
`git daemon`), checks the declaration against the fetched MLproject, runs it, and deletes its copy."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.terminal import run_one
from models import launches
from models.db import session_scope
from tests.launch.conftest import PROJECT
from tests.ports import free_port

pytestmark = [pytest.mark.slow]


@pytest.fixture
def git_uri(tmp_path: Path) -> Iterator[str]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    work = tmp_path / "src"
    shutil.copytree(PROJECT, work)
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "init.defaultBranch=main"]
    subprocess.run([*git, "init", "-q", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "quick"], check=True)
    served = tmp_path / "served"
    served.mkdir()
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(served / "quick.git")], check=True)
    port = free_port()
    daemon = subprocess.Popen(
        ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={served}", f"--port={port}",
         "--listen=127.0.0.1", str(served)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline or daemon.poll() is not None:
                daemon.kill()
                pytest.skip("git daemon did not start")
            time.sleep(0.05)
    yield f"git://127.0.0.1:{port}/quick.git"
    daemon.terminate()
    daemon.wait(timeout=10)


def configure(tmp_path: Path, uri: str, lr_type: str = "float") -> None:
    from labmate.settings import reset_settings

    (tmp_path / "labmate.toml").write_text(
        "[projects.remote]\n"
        f'uri = "{uri}"\nversion = "main"\nentry_points = ["train"]\nexperiment = "remote"\n'
        "[projects.remote.parameters.train]\n"
        'epochs = {type = "int", default = 2}\n'
        f'lr = {{type = "{lr_type}", default = 0.1}}\n'
    )
    reset_settings()


def test_a_git_project_is_fetched_by_the_worker_and_run(configured, mlflow_uri, git_uri, tmp_path) -> None:
    configure(tmp_path, git_uri)
    refused = run_one("run remote lr=fast", user="U1", channel="C1")
    assert refused.exit_code == 1 and "`fast` is not a valid float for `lr`" in refused.messages[0].text
    dry = run_one("run remote --dry-run", user="U1", channel="C1")
    assert f"the `train` command of the MLproject at {git_uri}@main (fetched by the worker)" in str(dry.messages[0].blocks)

    outcome = run_one("run remote epochs=2", user="U1", channel="C1")
    final = [m for m in outcome.messages if m.template == "launch_card"][-1]
    assert ": *finished*" in str(final.blocks), str(final.blocks)
    with session_scope() as session:
        launch = launches.get(session, launch_id=1)
        session.expunge(launch)
    from tasks import mlflow_io

    run = mlflow_io.client().get_run(launch.mlflow_run_id)
    assert run.data.tags["mlflow.source.name"] == git_uri
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40
    from tests.launch.test_launch_run import first_line

    clone = Path(first_line(launch)["cwd"])
    assert clone != PROJECT and not clone.exists(), "the worker's copy is deleted after the run"


def test_a_declaration_that_disagrees_with_the_fetched_mlproject_fails_the_launch(configured, mlflow_uri, git_uri, tmp_path) -> None:
    configure(tmp_path, git_uri, lr_type="int")
    outcome = run_one("run remote lr=1", user="U1", channel="C1")
    final = [m for m in outcome.messages if m.template == "launch_card"][-1]
    text = str(final.blocks)
    assert ": *failed*" in text
    assert "It did not start: labmate.toml declares `lr` as int, but the fetched MLproject has type float" in text
