"""Fixtures for the Slack tests: the fake Slack Web API, the Bolt app in process, `labmate serve`.

`lab` is parametrized over both transports: `inprocess` (build_app() + app.dispatch, the test's
own LABMATE_HOME) and `served` (a real `labmate serve` subprocess shared by the module, with its
own home and fake Slack; marked slow). Tests use unique channels and users, so the shared
server's records never cross between tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakeslack import FakeSlack
from slackreq import BOT_TOKEN, SIGNING_SECRET, InProcess, Lab, OverHTTP, Slack, free_port, healthy

REPO = Path(__file__).resolve().parents[2]
LABMATE = Path(sys.executable).with_name("labmate")


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack(token=BOT_TOKEN) as fake:
        yield fake


@pytest.fixture
def slack_env(lab_home: Path, migrated: str, fake_slack: FakeSlack, monkeypatch: pytest.MonkeyPatch) -> FakeSlack:
    """The test's labmate configured for Slack against the fake, knowledge base migrated."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.setenv("LABMATE_SLACK_API_URL", fake_slack.api_url)
    from bot.post import reset_router
    from labmate.settings import reset_settings

    reset_settings()
    reset_router()
    return fake_slack


def _swap_executor(app: Any) -> None:
    """Give the app a fresh listener executor and wait for the old one's tasks (a barrier)."""
    runner = app.listener_runner
    old = runner.listener_executor
    new = ThreadPoolExecutor(max_workers=5)
    runner.listener_executor = new
    runner.lazy_listener_runner.executor = new
    old.shutdown(wait=True)


@pytest.fixture
def bolt_app(slack_env: FakeSlack) -> Iterator[Any]:
    from bot.post import router
    from bot.slack_app import build_app

    app = build_app()
    router()
    yield app
    _swap_executor(app)
    app.listener_runner.listener_executor.shutdown(wait=True)
    from tasks import app as tasks_app
    from tasks.embedded import stop_worker

    stop_worker()
    tasks_app.reset()


@pytest.fixture
def inprocess(bolt_app: Any, slack_env: FakeSlack) -> Lab:
    from labmate.settings import get_settings

    return Lab(
        mode="inprocess",
        slack=Slack(InProcess(bolt_app), get_settings().database_url, response_base=slack_env.base_url + "response/"),
        fake=slack_env,
        db_url=get_settings().database_url,
        drain=lambda: _swap_executor(bolt_app),
    )


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    home: Path
    log: Path

    @property
    def db_url(self) -> str:
        return f"sqlite:///{(self.home / 'labmate.db').resolve()}"


def serve_env(home: Path, fake: FakeSlack, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABMATE_", "SLACK_", "MLFLOW_"))}
    home.mkdir(parents=True, exist_ok=True)
    (home / "labmate.toml").touch(exist_ok=True)  # LABMATE_CONFIG names it: it must exist
    env.update(
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        LABMATE_SLACK_API_URL=fake.api_url,
        LABMATE_HOME=str(home),
        LABMATE_CONFIG=str(home / "labmate.toml"),
        **extra,
    )
    return env


def start_serve(home: Path, env: dict[str, str], *args: str, timeout: float = 60.0) -> Served:
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = home / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(LABMATE), "serve", "--host", "127.0.0.1", "--port", str(port), *args],
            env=env,
            cwd=str(home),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    served = Served(process, port, home, log)
    deadline = time.monotonic() + timeout
    while not healthy(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_serve(served)
            raise RuntimeError(f"labmate serve did not become healthy:\n{log.read_text(errors='replace')[-4000:]}")
        time.sleep(0.05)
    return served


def stop_serve(served: Served) -> None:
    """Stop the uWSGI master (it stops its worker); kill the process group if it lingers."""
    import signal

    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
        try:
            served.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(served.process.pid, signal.SIGKILL)
            served.process.wait(timeout=5)


@pytest.fixture(scope="module")
def served_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, FakeSlack]]:
    with FakeSlack(token=BOT_TOKEN) as fake:
        home = tmp_path_factory.mktemp("served") / "labmate-home"
        served = start_serve(home, serve_env(home, fake), "--workers", "1", "--threads", "8")
        try:
            yield served, fake
        finally:
            stop_serve(served)


@pytest.fixture(params=["inprocess", pytest.param("served", marks=pytest.mark.slow)])
def lab(request: pytest.FixtureRequest) -> Lab:
    if request.param == "inprocess":
        return request.getfixturevalue("inprocess")
    served, fake = request.getfixturevalue("served_lab")
    slack = Slack(OverHTTP(served.port), served.db_url, response_base=fake.base_url + "response/")
    return Lab(mode="served", slack=slack, fake=fake, db_url=served.db_url, drain=lambda: None)

