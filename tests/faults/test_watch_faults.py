"""Run watch and the digest under faults, with real processes: `labmate worker`, `labmate beat` (polling
every second), Redis, the fake Slack, a real MLflow store.

- Slack answering 429 while notices go out: each notice is posted once.
- A worker SIGKILLed while Slack holds a notice's post: the replacement finds the posted message by its
  key and posts nothing twice.
- MLflow unreachable (its PostgreSQL store behind a proxy that stops): the poll logs it, nobody is told,
  and the runs that ended meanwhile are announced once MLflow is back.
- Two `labmate digest --now` at once on PostgreSQL: one digest is posted.
- The digest beat finds due, posted while Slack answers 429, or while its worker is SIGKILLed with Slack
  holding the post: one digest, its day's row `delivered`.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from fakeslack import iter_texts
from harness import TcpProxy, wait_until
from slackreq import unique

from tests.conftest import POSTGRES_URL, service_or_skip
from tests.experiments.conftest import empty_mlflow_db  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.redis]
ADMIN = "UADMIN"


def _toml(*extra: str) -> str:
    return "\n".join(["[access]", f'admins = ["{ADMIN}"]', "[primary_metrics]", '"sales-agent" = "val_f1"', *extra]) + "\n"


def _end_run(client: Any, experiment_id: str, name: str, *, status: str = "FINISHED", f1: float | None = None) -> str:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    run = client.create_run(experiment_id, start_time=now - 30_000, tags={"mlflow.user": "dana"}, run_name=name)
    if f1 is not None:
        client.log_batch(run.info.run_id, metrics=[Metric("val_f1", f1, now - 1000, 1)])
    client.set_terminated(run.info.run_id, status=status, end_time=now)
    return str(run.info.run_id)


def _watch(db_url: str, uri: str, experiment_id: str, channel: str) -> None:
    from models import watch as watches
    from models.db import session_scope, upgrade
    from models.run_index import store_key

    upgrade(db_url)
    with session_scope(db_url) as session:
        watches.add(session, store=store_key(uri), experiment_id=experiment_id, experiment="sales-agent", channel=channel,
                    reply_to={"channel": channel, "source": "slack"}, user="U0DANA",
                    since_ms=int(time.time() * 1000) - 1000)  # fmt: skip


def deploy(make_lab: Any, tmp_path: Path, empty_db: Path, **options: Any) -> tuple[Any, Any, str, str]:
    """A lab polling every second, an MLflow store with sales-agent (one finished run), a watched channel."""
    from mlflow import MlflowClient

    mlflow_db = tmp_path / f"mlflow-{unique('m')}.db"
    shutil.copy(empty_db, mlflow_db)
    uri = f"sqlite:///{mlflow_db}"
    setup = make_lab(MLFLOW_TRACKING_URI=uri, LABMATE_WATCH_EVERY="1", **options)
    (setup.lab.home / "labmate.toml").write_text(_toml())
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("sales-agent", artifact_location=str(tmp_path / "artifacts"))
    _end_run(client, experiment_id, "baseline", f1=0.5)
    channel = unique("C")
    _watch(setup.db_url, uri, experiment_id, channel)
    return setup, client, experiment_id, channel


def posts(setup: Any, channel: str) -> list[str]:
    calls = [c for c in setup.lab.fake.calls("chat.postMessage") if c.ok and c.params.get("channel") == channel]
    return ["\n".join([c.params.get("text", ""), *iter_texts(c.params.get("blocks", []))]) for c in calls]


def about(texts: list[str], run_id: str) -> list[str]:
    return [t for t in texts if f"run `{run_id[:8]}`" in t]


def test_slack_429s_during_notices_post_each_notice_once(make_lab, tmp_path, empty_mlflow_db) -> None:  # noqa: F811
    setup, client, experiment_id, channel = deploy(make_lab, tmp_path, empty_mlflow_db)
    setup.lab.fake.rate_limit("chat.postMessage", 6, where=lambda params: params.get("channel") == channel)
    runs = [_end_run(client, experiment_id, f"r{i}", f1=0.6 + i / 100) for i in range(3)]
    with setup.lab.starting():
        setup.lab.worker()
        setup.lab.beat()
    wait_until(lambda: all(about(posts(setup, channel), r) for r in runs), timeout=90, what="the three notices")
    wait_until(lambda: any("New best in sales-agent" in t for t in posts(setup, channel)), timeout=30, what="the best")
    time.sleep(4)  # four more polls
    texts = posts(setup, channel)
    assert [len(about(texts, r)) for r in runs] == [1, 1, 1], setup.lab.logs()
    assert len([t for t in texts if "New best in sales-agent" in t]) == 1
    assert len(texts) == 4
    limited = [c for c in setup.lab.fake.calls("chat.postMessage") if c.params.get("channel") == channel and not c.ok]
    assert limited  # Slack did refuse some


def test_a_worker_killed_during_the_poll_posts_no_notice_twice(make_lab, tmp_path, empty_mlflow_db) -> None:  # noqa: F811
    setup, client, experiment_id, channel = deploy(make_lab, tmp_path, empty_mlflow_db)
    failed = _end_run(client, experiment_id, "crashed", status="FAILED")
    worker = setup.lab.worker()
    # Carried out; the worker never hears back: its client gives up after 1 s and it is killed before that.
    # Slack answers the abandoned call after 5 s, and only then does the fake list the post among its calls.
    setup.lab.fake.stall("chat.postMessage", 5)
    setup.lab.beat()
    setup.lab.fake.wait_in_flight("chat.postMessage")
    worker.kill()
    setup.lab.worker()
    wait_until(lambda: about(posts(setup, channel), failed), timeout=90, what="the notice after the worker was replaced")
    time.sleep(5)
    messages = [m for m in setup.lab.fake.messages(channel) if failed[:8] in str(m.get("blocks"))]
    assert len(messages) == 1, setup.lab.logs()
    assert "MLflow has no error text for this run" in str(messages[0]["blocks"])


@pytest.fixture
def postgres_mlflow_store(tmp_path: Path) -> Any:
    """sales-agent in an MLflow store on its own PostgreSQL database (dropped afterwards)."""
    from mlflow import MlflowClient

    from bench import mlflow_stores

    base = service_or_skip("PostgreSQL", POSTGRES_URL)
    name = f"mlflow_watch_{uuid.uuid4().hex[:10]}"
    url = mlflow_stores.postgres_database(base, name).replace("postgresql://", "postgresql+psycopg://")
    client = MlflowClient(tracking_uri=url)
    experiment_id = client.create_experiment("sales-agent", artifact_location=str(tmp_path / "artifacts"))
    yield url, client, experiment_id
    client._tracking_client.store.engine.dispose()
    mlflow_stores.drop_postgres_database(base, name)


@pytest.mark.postgres
def test_mlflow_unreachable_during_polls_is_logged_and_caught_up_later(make_lab, postgres_mlflow_store) -> None:
    url, client, experiment_id = postgres_mlflow_store
    _end_run(client, experiment_id, "baseline", f1=0.5)
    proxy = TcpProxy.to(url, 5432).start()
    served = proxy.url(url)
    setup = make_lab(MLFLOW_TRACKING_URI=served, LABMATE_WATCH_EVERY="1")
    (setup.lab.home / "labmate.toml").write_text(_toml())
    channel = unique("C")
    _watch(setup.db_url, served, experiment_id, channel)
    with setup.lab.starting():
        worker = setup.lab.worker()
        setup.lab.beat()
    wait_until(lambda: "watch poll: done" in worker.output(), timeout=60, what="a first poll")
    before = posts(setup, channel)
    proxy.stop()  # MLflow's database is down
    while_down = _end_run(client, experiment_id, "while-down", f1=0.9)
    try:
        wait_until(lambda: worker.output().count("could not read MLflow") >= 3, timeout=60,
                   what="three failed polls")  # fmt: skip
        while_mlflow_was_down = posts(setup, channel)
    except AssertionError:
        raise AssertionError(setup.lab.logs()) from None
    finally:
        proxy.start()
    assert while_mlflow_was_down == before  # nobody was told anything
    wait_until(lambda: about(posts(setup, channel), while_down), timeout=90, what="the notice once MLflow is back")
    time.sleep(3)
    assert len(about(posts(setup, channel), while_down)) == 1
    proxy.close()


@pytest.mark.postgres
def test_two_digest_runs_at_once_post_one_digest(make_lab, tmp_path, empty_mlflow_db) -> None:  # noqa: F811
    mlflow_db = tmp_path / "mlflow-digest.db"
    shutil.copy(empty_mlflow_db, mlflow_db)
    uri = f"sqlite:///{mlflow_db}"
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("sales-agent", artifact_location=str(tmp_path / "artifacts"))
    _end_run(client, experiment_id, "today", f1=0.7)
    setup = make_lab(postgres=True, MLFLOW_TRACKING_URI=uri)
    channel = unique("C")
    digest_table = ("[[digest.channels]]", f'channel = "{channel}"', 'at = "00:00"', 'timezone = "UTC"')
    (setup.lab.home / "labmate.toml").write_text(_toml(*digest_table))
    from models.db import upgrade

    upgrade(setup.db_url)
    runs = [setup.lab.spawn("digest", "digest", "--now") for _ in range(2)]
    for proc in runs:
        proc.process.wait(timeout=120)
    outputs = [proc.output() for proc in runs]
    assert sorted(p.process.returncode for p in runs) == [0, 0], outputs
    assert sum("posted the digest" in o for o in outputs) == 1, outputs
    assert sum("nothing posted" in o and ("being posted now" in o or "already posted" in o) for o in outputs) == 1, outputs
    [digest] = posts(setup, channel)
    assert "Daily digest" in digest and "*sales-agent*: 1 started · 1 finished · 0 failed" in digest


def test_a_digest_now_slack_refused_can_be_run_again(make_lab, tmp_path, empty_mlflow_db) -> None:  # noqa: F811
    """One 500 from Slack claimed the day for good: the next `digest --now` said the digest "was already made",
    and beat posted none that day either."""
    mlflow_db = tmp_path / "mlflow-digest.db"
    shutil.copy(empty_mlflow_db, mlflow_db)
    setup = make_lab(MLFLOW_TRACKING_URI=f"sqlite:///{mlflow_db}")
    channel = unique("C")
    digest_table = ("[[digest.channels]]", f'channel = "{channel}"', 'at = "00:00"', 'timezone = "UTC"')
    (setup.lab.home / "labmate.toml").write_text(_toml(*digest_table))
    setup.lab.fake.fail("chat.postMessage", times=3)  # the first try and its SDK-level retries' worth
    first = setup.lab.spawn("digest", "digest", "--now")
    first.process.wait(timeout=120)
    said = " ".join(first.output().split())  # as the terminal wrapped it
    assert first.process.returncode == 2 and "Run `labmate digest --now` again later" in said, said
    assert not posts(setup, channel)
    setup.lab.fake.heal("chat.postMessage")
    again = setup.lab.spawn("digest", "digest", "--now")
    again.process.wait(timeout=120)
    assert again.process.returncode == 0 and "posted the digest" in again.output(), again.output()
    assert len(posts(setup, channel)) == 1


def digest_lab(make_lab: Any, tmp_path: Path, empty_db: Path) -> tuple[Any, str]:
    """A lab whose beat checks every second for a due digest, and a channel whose digest came due five
    minutes ago, covering a run that ended ten minutes ago."""
    from datetime import UTC, datetime, timedelta

    from mlflow import MlflowClient

    mlflow_db = tmp_path / f"mlflow-{unique('m')}.db"
    shutil.copy(empty_db, mlflow_db)
    uri = f"sqlite:///{mlflow_db}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("sales-agent", artifact_location=str(tmp_path / "artifacts"))
    ended = int(time.time() * 1000) - 600_000
    run = client.create_run(experiment_id, start_time=ended - 30_000, tags={"mlflow.user": "dana"}, run_name="r1")
    client.set_terminated(run.info.run_id, status="FINISHED", end_time=ended)
    setup = make_lab(MLFLOW_TRACKING_URI=uri, LABMATE_WATCH_EVERY="1")
    channel = unique("C")
    at = (datetime.now(UTC) - timedelta(minutes=5)).strftime("%H:%M")
    digest_table = ("[[digest.channels]]", f'channel = "{channel}"', f'at = "{at}"', 'timezone = "UTC"')
    (setup.lab.home / "labmate.toml").write_text(_toml(*digest_table))
    return setup, channel


def digest_states(setup: Any, channel: str) -> list[str]:
    from sqlalchemy import select

    from models import watch as watches
    from models.db import session_scope

    with session_scope(setup.db_url) as session:
        return list(session.scalars(select(watches.Digest.state).where(watches.Digest.channel == channel)))


def test_slack_429s_during_the_digest_post_it_once(make_lab, tmp_path, empty_mlflow_db) -> None:  # noqa: F811
    setup, channel = digest_lab(make_lab, tmp_path, empty_mlflow_db)
    setup.lab.fake.rate_limit("chat.postMessage", 3, where=lambda params: params.get("channel") == channel)
    with setup.lab.starting():
        setup.lab.worker()
        setup.lab.beat()
    wait_until(lambda: posts(setup, channel), timeout=90, what="the digest")
    time.sleep(4)  # four more digest checks
    [digest] = posts(setup, channel)
    assert "Daily digest" in digest and "*sales-agent*: 1 started · 1 finished · 0 failed" in digest, setup.lab.logs()
    refused = [c for c in setup.lab.fake.calls("chat.postMessage") if c.params.get("channel") == channel and not c.ok]
    assert len(refused) == 3  # Slack did refuse it three times
    assert digest_states(setup, channel) == ["delivered"]


def test_a_worker_killed_while_slack_holds_the_digest_posts_it_once(make_lab, tmp_path, empty_mlflow_db) -> None:  # noqa: F811
    setup, channel = digest_lab(make_lab, tmp_path, empty_mlflow_db)
    # Carried out; the worker never hears back (its client gives up after 1 s) and is killed before Slack
    # answers the abandoned call after 5 s: the replacement finds the posted digest by its key.
    setup.lab.fake.stall("chat.postMessage", 5)
    worker = setup.lab.worker()
    setup.lab.beat()
    setup.lab.fake.wait_in_flight("chat.postMessage")
    worker.kill()
    setup.lab.worker()
    wait_until(lambda: digest_states(setup, channel) == ["delivered"], timeout=90, what="the digest delivered")
    time.sleep(3)
    digests = [m for m in setup.lab.fake.messages(channel) if "Daily digest" in str(m)]
    assert len(digests) == 1, setup.lab.logs()
