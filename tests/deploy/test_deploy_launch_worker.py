"""The compose file's launch worker: a real `labmate worker` consuming only the `launch` queue."""

from __future__ import annotations

from labmate.settings import settings_env_names
from tests.deploy.test_deploy_files import COMPOSE, _resolve


def test_a_worker_service_consumes_only_the_launch_queue_with_its_own_concurrency():
    service = COMPOSE["services"]["launch-worker"]
    command = service["command"]
    assert _resolve(command)[0].name == "worker"
    assert command[command.index("--queues") + 1] == "launch"
    assert int(command[command.index("--concurrency") + 1]) >= 1
    assert set(service["environment"]) <= settings_env_names()
    assert service["environment"] == COMPOSE["services"]["worker"]["environment"]


def test_training_runs_only_on_the_launch_worker():
    """The general worker answers chat; if it also took `launch`, a long training run would sit in
    front of every summary."""
    command = COMPOSE["services"]["worker"]["command"]
    assert "launch" not in command[command.index("--queues") + 1].split(",")
