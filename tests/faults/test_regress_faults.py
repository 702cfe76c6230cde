"""Regression runs under faults, with real processes: `labmate serve`, two `regress` workers and a
`default` one, beat, Redis, the fake Slack, and a registered model that takes 50 ms a reply.

- A regress worker SIGKILLed mid-run: its chunk is re-sent by the reaper (its heartbeat stopped) and run
  by the other worker; the run completes once, every chunk counted once, one card.
- Slack answering 429 to card edits: the run goes on unaffected and the final card arrives, once.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fakeslack import iter_texts
from harness import wait_until
from slackreq import OverHTTP, Slack, unique

from tests.regressions.conftest import ADMIN, shop_store  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.redis]
REPO = Path(__file__).resolve().parents[2]
CONVERSATIONS = 60


def big_suite(count: int) -> str:
    conversations = "".join(
        f"""
  - id: c{n}
    tags: [p1]
    turns:
      - user: hello {n}
        expect:
          - contains: Hello
      - user: what is the price?
        expect:
          - contains: USD
"""
        for n in range(count)
    )
    return "suite: many\ngate:\n  min_pass_rate: 1.0\nconversations:" + conversations


def deploy(make_lab: Any, store: Path) -> Any:
    mlflow_db = store.parent / f"mlflow-{unique('m')}.db"
    shutil.copy(store / "mlflow.db", mlflow_db)
    setup = make_lab(MLFLOW_TRACKING_URI=f"sqlite:///{mlflow_db}", PYTHONPATH=str(REPO))
    home = setup.lab.home
    (home / "suites").mkdir()
    (home / "suites" / "many.yaml").write_text(big_suite(CONVERSATIONS))
    (home / "labmate.toml").write_text(textwrap.dedent(f"""
        [access]
        admins = ["{ADMIN}"]
        [regress]
        folders = ["suites"]
    """))
    return setup


def slack(setup: Any) -> Slack:
    return Slack(OverHTTP(setup.lab.port), setup.db_url, response_base=setup.lab.fake.base_url + "response/")


def run_row(setup: Any) -> Any:
    from models import regressions
    from models.db import session_scope

    with session_scope(setup.db_url) as session:
        row = regressions.get(session, run_id=1)
        if row is not None:
            session.expunge(row)
        return row


def chunks_stored(setup: Any) -> list[int]:
    from models import regressions
    from models.db import session_scope

    with session_scope(setup.db_url) as session:
        return sorted(c.index for c in session.query(regressions.RegressionChunk).filter_by(run_id=1))


def card_calls(setup: Any, channel: str, method: str) -> list[Any]:
    return [
        c for c in setup.lab.fake.calls(method) if c.ok and c.params.get("channel") == channel
        and (c.params.get("metadata") or {}).get("event_payload", {}).get("key") == "regress:1"
    ]


def card_texts(setup: Any, channel: str) -> list[str]:
    calls = card_calls(setup, channel, "chat.postMessage") + card_calls(setup, channel, "chat.update")
    calls.sort(key=lambda c: c.at)
    return ["\n".join([c.params.get("text", ""), *iter_texts(c.params.get("blocks", []))]) for c in calls]


def test_a_regress_worker_killed_mid_run_has_its_chunk_run_again_and_the_run_completes_once(
    make_lab: Any, shop_store: Path  # noqa: F811
) -> None:
    setup = deploy(make_lab, shop_store)
    with setup.lab.starting():
        setup.lab.serve()
        doomed = setup.lab.worker(queues="regress", concurrency=1)
        setup.lab.worker(queues="regress", concurrency=1)
        setup.lab.worker(queues="default")
        setup.lab.beat()
    channel = unique("C")
    answer = slack(setup).command("regress many candidate:models:/shop@slow workers:2", user="U0ALICE", channel=channel)
    assert "*R1* queued" in answer.body
    wait_until(lambda: (row := run_row(setup)) and row.done > 0, timeout=120, what="the first chunk")

    def frozen_mid_chunk() -> bool:
        """Seen running a chunk, then frozen and seen again: a chunk that ended between the look and the
        SIGKILL would need no rescue (this raced on a busy machine). Frozen, it can't end."""
        if not running_on(setup, doomed.process.pid):
            return False
        doomed.pause()
        if running_on(setup, doomed.process.pid):
            return True
        doomed.resume()
        return False

    wait_until(frozen_mid_chunk, timeout=60, what="the doomed worker frozen while it runs a chunk")
    doomed.kill()
    ended = wait_until(lambda: (row := run_row(setup)).status in ("passed", "failed", "error") and row,
                       timeout=120, what="the run to end")
    assert ended.status == "passed", ended.reason
    assert ended.done == ended.total == CONVERSATIONS
    assert chunks_stored(setup) == list(range(ended.chunks))
    chunk_jobs = [j for j in setup.jobs() if j.task == "labmate.regress.chunk"]
    assert len(chunk_jobs) == ended.chunks and all(j.state == "done" for j in chunk_jobs)
    assert sum(j.rescues for j in chunk_jobs) >= 1, "the killed worker's chunk was re-sent by the reaper"
    wait_until(lambda: any(": *passed*" in t for t in card_texts(setup, channel)), timeout=60, what="the final card")
    assert len(card_calls(setup, channel, "chat.postMessage")) == 1


def running_on(setup: Any, pid: int) -> bool:
    """A chunk runs in this worker's pool process now (a job's ledger row names the process that runs it)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return False
    names = {f":{p}" for p in (str(pid), *children)}
    return any(j.task == "labmate.regress.chunk" and j.state == "running" and any(j.worker.endswith(n) for n in names)
               for j in setup.jobs())


def test_slack_429s_on_card_edits_delay_the_card_not_the_run(make_lab: Any, shop_store: Path) -> None:  # noqa: F811
    setup = deploy(make_lab, shop_store)
    with setup.lab.starting():
        setup.lab.serve()
        setup.lab.worker(queues="regress", concurrency=2)
        setup.lab.worker(queues="default")
    channel = unique("C")
    setup.lab.fake.rate_limit("chat.update", 6)
    answer = slack(setup).command("regress many candidate:models:/shop@slow workers:2", user="U0ALICE", channel=channel)
    assert "*R1* queued" in answer.body
    ended = wait_until(lambda: (row := run_row(setup)) and row.status in ("passed", "failed", "error") and row,
                       timeout=120, what="the run to end")
    assert ended.status == "passed", ended.reason
    assert (ended.ended_at - ended.created_at).total_seconds() < 60
    wait_until(lambda: any(": *passed*" in t for t in card_texts(setup, channel)), timeout=90, what="the final card")
    statuses = [c.status for c in setup.lab.fake.calls("chat.update") if c.params.get("channel") == channel]
    assert statuses.count(429) == 6, statuses
    assert len(card_calls(setup, channel, "chat.postMessage")) == 1
    updates = card_calls(setup, channel, "chat.update")
    last = ["\n".join(iter_texts(c.params.get("blocks", []))) for c in updates][-1]
    assert ": *passed*" in last, "nothing after the verdict"
