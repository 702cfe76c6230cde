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
    assert f"entry point train of the MLproject at {git_uri}@main (fetched by the worker)" in str(dry.messages[0].blocks)

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


def _repo(tmp_path: Path) -> Path:
    """The project in a subdirectory of a git repository with a tag `v1`, then a change left uncommitted."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    shutil.copytree(PROJECT, repo / "sub")
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "init.defaultBranch=main", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "quick"], check=True)
    subprocess.run([*git, "tag", "v1"], check=True)
    (repo / "sub" / "notes.txt").write_text("work in progress\n")
    return repo


def _configure_local(tmp_path: Path, uri: str, version: str | None) -> None:
    from labmate.settings import reset_settings

    (tmp_path / "labmate.toml").write_text(
        "[projects.mine]\n"
        f'uri = "{uri}"\nentry_points = ["train"]\nexperiment = "mine"\n'
        + (f'version = "{version}"\n' if version else "")
        + "[projects.mine.parameters.train]\n"
        'epochs = {type = "int", default = 2}\nlr = {type = "float", default = 0.1}\n'
    )
    reset_settings()


def _final_card(text: str) -> str:
    outcome = run_one(text, user="U1", channel="C1")
    return str([m for m in outcome.messages if m.template == "launch_card"][-1].blocks)


def _git_state(repo: Path) -> tuple[str, str]:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout

    return git("symbolic-ref", "HEAD"), git("status", "--porcelain")


def test_a_file_uri_project_runs_where_it_is_and_is_never_deleted(configured, mlflow_uri, tmp_path) -> None:
    repo = _repo(tmp_path)
    _configure_local(tmp_path, f"file://{repo}#sub", None)
    before = _git_state(repo)
    assert ": *finished*" in _final_card("run mine epochs=1")
    with session_scope() as session:
        launch = launches.get(session, launch_id=1)
        session.expunge(launch)
    from tests.launch.test_launch_run import first_line

    assert Path(first_line(launch)["cwd"]) == repo / "sub", "the directory itself, not a copy"
    assert (repo / "sub" / "MLproject").exists() and (repo / "sub" / "notes.txt").exists(), "the user's files stay"
    assert _git_state(repo) == before
    assert ": *finished*" in _final_card("run mine epochs=1"), "and it runs again"


def test_a_version_of_a_local_repository_runs_in_a_clone_and_leaves_the_repository_as_it_was(
    configured, mlflow_uri, tmp_path
) -> None:
    repo = _repo(tmp_path)
    _configure_local(tmp_path, f"file://{repo}#sub", "v1")
    before = _git_state(repo)
    assert ": *finished*" in _final_card("run mine epochs=1")
    with session_scope() as session:
        launch = launches.get(session, launch_id=1)
        session.expunge(launch)
    from tests.launch.test_launch_run import first_line

    cwd = Path(first_line(launch)["cwd"])
    assert cwd.name == "sub" and not cwd.parent.exists(), "the whole clone is deleted, not only its subdirectory"
    assert (repo / "sub" / "notes.txt").exists() and _git_state(repo) == before, "no checkout in the user's repository"
    assert ": *finished*" in _final_card("run mine epochs=1")

    _configure_local(tmp_path, f"file://{repo}#sub", "v9")
    assert f"It did not start: the worker could not fetch file://{repo}#sub@v9 (" in _final_card("run mine epochs=1")


def test_a_git_project_with_a_subdirectory_leaves_no_clone_behind(configured, mlflow_uri, git_uri, tmp_path) -> None:
    from tasks.mlflow_io.launch import fetch_project

    fetched, copy = fetch_project(git_uri, "main", "train", {"epochs": "1"})
    assert copy == fetched and copy.exists()
    shutil.rmtree(copy)
    with pytest.raises(Exception, match=r"could not fetch .*@main \(it has no subdirectory nowhere\)"):
        fetch_project(f"{git_uri}#nowhere", "main", "train", {})
