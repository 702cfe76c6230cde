"""Run watch on a real MLflow store and knowledge base: what a poll notices, announces, and never twice."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from labmate.errors import NotFoundError
from labmate.settings import reset_settings
from models import watch as watches
from models.db import session_scope
from tasks.jobs import DELIVERY
from tasks.watch import poll
from tests.watch.conftest import configure, end_run, watch


def _shown(replies):
    return [(t, {k: v for k, v in c.items() if k != DELIVERY}, c[DELIVERY]["key"]) for t, c in replies]


def test_watch_of_an_unknown_experiment_suggests_the_closest(watched):
    with pytest.raises(NotFoundError) as caught:
        watch("sales-agnet")
    assert "`sales-agent`" in caught.value.message and "no experiment `sales-agnet`" in caught.value.message
    assert "summary" not in caught.value.hint  # the hint was `summary "wine quality"`, for a watch
    with session_scope() as session:
        assert watches.all_watches(session) == []


def test_watch_answers_with_the_best_so_far_and_a_second_watch_keeps_the_first(watched):
    [(template, context)] = watch()
    assert template == "watch_added" and context["new"] and context["here"] and context["unwatch"] == "unwatch sales-agent"
    assert context["best"]["name"] == "unigram-v2" and context["best"]["metric"] == "val_f1"
    [(_t, again)] = watch()
    assert not again["new"]


def test_a_poll_announces_each_ended_run_once_with_metrics_error_and_new_best(watched):
    end_run(watched, "before-watch", f1=0.88)  # ended before the watch: never announced
    watch()
    ok = end_run(watched, "good", f1=0.91)
    crashed = end_run(watched, "crashed", status="FAILED", tags={"labmate.error": "Traceback\n  line\nValueError: bad shape (3, 4)"})
    silent = end_run(watched, "silent", status="KILLED")
    replies, keys = poll.poll()
    shown = {c.get("run_id"): (t, c, k) for t, c, k in _shown(replies)}
    assert set(shown) == {ok, crashed, silent}  # the best notice is about `good`, keyed apart
    templates = sorted(t for t, _c, _k in _shown(replies))
    assert templates == ["watch_best", "watch_notice", "watch_notice", "watch_notice"]
    best = next(c for t, c, _k in _shown(replies) if t == "watch_best")
    assert best["name"] == "good" and best["previous"] == "before-watch" and best["value"] == "0.91"
    good = next(c for t, c, _k in _shown(replies) if t == "watch_notice" and c["run_id"] == ok)
    assert good["metrics"][0] == {"key": "val_f1", "value": "0.91"} and good["took"]
    failed = next(c for t, c, _k in _shown(replies) if t == "watch_notice" and c["run_id"] == crashed)
    assert failed["error"].endswith("ValueError: bad shape (3, 4)")
    killed = next(c for t, c, _k in _shown(replies) if t == "watch_notice" and c["run_id"] == silent)
    assert killed["error"] is None and killed["status"] == "killed"
    assert len(keys) == 4
    # not delivered yet: the next poll offers the same messages under the same keys (the outbox posts a key once)
    again, again_keys = poll.poll()
    assert sorted(again_keys) == sorted(keys) and len(again) == 4
    poll.delivered(keys)
    assert poll.poll() == ([], [])


def test_a_run_whose_machine_clock_runs_minutes_behind_is_still_announced(watched):
    """docs/watch-and-digest.md: the poll looks five minutes back (the index sync's clock slack) for
    training machines whose clocks disagree; it looked two."""
    import time
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    watch()
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    with session_scope() as session:
        session.execute(update(watches.Watch).values(created_at=hour_ago, since_ms=int(hour_ago.timestamp() * 1000)))
    assert poll.poll() == ([], [])
    client, now = watched.client, int(time.time() * 1000)
    behind = client.create_run(watched.experiment_id, start_time=now - 8 * 60_000, run_name="clock-behind").info.run_id
    client.set_terminated(behind, status="FINISHED", end_time=now - 4 * 60_000)
    replies, _keys = poll.poll()
    assert [c.get("run_id") for t, c, _k in _shown(replies) if t == "watch_notice"] == [behind]


def test_the_notices_render_for_slack(watched):
    from bot.messages.render import render

    watch()
    end_run(watched, "good", f1=0.95)
    end_run(watched, "silent", status="FAILED")
    replies, _keys = poll.poll()
    texts = {t: render(t, c) for t, c, _k in _shown(replies)}
    assert "New best in sales-agent" in texts["watch_best"].text
    notices = [render(t, c) for t, c, _k in _shown(replies) if t == "watch_notice"]
    joined = " ".join(str(m.blocks) for m in notices)
    assert "MLflow has no error text for this run" in joined


def test_a_burst_of_runs_is_one_grouped_message(watched, tmp_path: Path):
    configure(tmp_path, "watch_group_over = 5")
    watch()
    for i in range(8):
        end_run(watched, f"trial-{i}", f1=0.5 + i / 100)
    end_run(watched, "broken", status="FAILED")
    replies, keys = poll.poll()
    [(template, context, key)] = _shown(replies)
    assert template == "watch_group" and ":group:" in key and keys == [key]
    assert context["total"] == 9
    assert {c["status"]: c["count"] for c in context["counts"]} == {"finished": 8, "failed": 1}
    assert context["runs"][0]["name"] == "broken" and context["best"] is None  # 0.57 doesn't beat 0.86


def test_two_polls_at_once_write_each_notice_once(watched):
    watch()
    for i in range(6):
        end_run(watched, f"run-{i}", f1=0.1)
    results: list[tuple] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            results.append(poll.poll())
        except BaseException as exc:  # pragma: no cover - shown by the assert
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    poll.poll()  # a poll that lost a lock race to the other is retried by the next one
    with session_scope() as session:
        rows = list(session.scalars(watches.select(watches.WatchNotice)))
    assert sorted(r.run_id for r in rows) == sorted(watched.runs[f"run-{i}"] for i in range(6))
    offered = [key for _replies, keys in results for key in keys]
    assert {r.message_key for r in rows} <= set(offered) | {k for k in poll.pending_replies()[1]}


def test_unwatched_experiments_are_not_polled(watched):
    end_run(watched, "nobody-watches", f1=0.2)
    assert poll.poll() == ([], [])
    reset_settings()


@pytest.mark.postgres
def test_polls_on_postgresql_write_each_notice_once(watched, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The knowledge base on PostgreSQL: ON CONFLICT DO NOTHING for notice rows, GREATEST for the watch's mark,
    and four polls at once."""
    monkeypatch.setenv("LABMATE_DATABASE_URL", postgres_url)
    reset_settings()
    watch()
    ids = [end_run(watched, f"pg-{i}", f1=0.2) for i in range(7)]
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def one() -> None:
        barrier.wait()
        try:
            poll.poll()
        except BaseException as exc:  # pragma: no cover - shown by the assert
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    replies, _keys = poll.poll()
    with session_scope() as session:
        rows = list(session.scalars(watches.select(watches.WatchNotice)))
        [row] = watches.all_watches(session)
        assert row.since_ms > 0 and row.failures == 0
    assert sorted(r.run_id for r in rows) == sorted(ids)
    assert len({r.message_key for r in rows}) == 1 and len(replies) == 1  # 7 > 5: one grouped message
    assert replies[0][0] == "watch_group" and replies[0][1]["total"] == 7


def test_a_new_best_follows_the_declared_direction(watched, tmp_path: Path) -> None:
    """train_loss ranks sales-agent here, lower is better (the experiment's MLflow tag says so): a run with a
    lower loss is a new best, one with a higher F1 (so a higher loss) isn't."""
    (tmp_path / "labmate.toml").write_text('[primary_metrics]\n"sales-agent" = "train_loss"\n')
    reset_settings()
    watched.client.set_experiment_tag(watched.experiment_id, "labmate.direction.train_loss", "lower")
    watch()
    worse = end_run(watched, "worse", f1=0.1)  # train_loss 0.9: worse than unigram-v2's 0.14
    replies, keys = poll.poll()
    assert [t for t, _c, _k in _shown(replies)] == ["watch_notice"]
    poll.delivered(keys)
    better = end_run(watched, "better", f1=0.99)  # train_loss 0.01
    replies, _keys = poll.poll()
    best = next(c for t, c, _k in _shown(replies) if t == "watch_best")
    assert best["run_id"] == better != worse and best["metric"] == "train_loss"
    assert best["direction"] == "lower is better" and best["previous"] == "unigram-v2" and best["delta"].startswith("-")


def test_an_answer_right_after_a_poll_agrees_with_its_notices(watched, monkeypatch: pytest.MonkeyPatch) -> None:
    """The poll wrote the runs it announces to the index: a summary inside the index's freshness window
    (which reads only the index) counts them too."""
    from tasks.experiments import sync
    from tasks.experiments.summary import summary

    watch()
    [(_t, before)] = summary("sales-agent", "val_f1", 1)  # the index built and fresh
    end_run(watched, "good", f1=0.91)
    end_run(watched, "crashed", status="FAILED")
    replies, _keys = poll.poll()
    assert sorted(c.get("name") for _t, c, _k in _shown(replies)) == ["crashed", "good", "good"]
    monkeypatch.setattr(sync, "refresh", lambda *a, **kw: pytest.fail("a warm answer synced"))
    [(_t, after)] = summary("sales-agent", "val_f1", 1)
    assert after["runs"][0]["name"] == "good"
    assert after["total"] == before["total"] + 2
    counts = {c["status"]: c["count"] for c in after["counts"]}
    before_counts = {c["status"]: c["count"] for c in before["counts"]}
    assert counts == {"finished": before_counts["finished"] + 1, "failed": before_counts["failed"] + 1}


def test_a_watch_from_the_terminal_says_the_notices_are_not_shown_there(watched):
    """`labmate say "watch sales-agent"` promised notices the terminal never shows (they are Slack messages)."""
    from bot.messages.render import render
    from tasks.watch import add

    [(template, context)] = add.add("sales-agent", "terminal", {"user": "UDANA", "channel": "terminal", "source": "shell"})
    shown = render(template, context).blocks
    assert any("this terminal shows none" in str(block) for block in shown)
    [(template, context)] = add.add("sales-agent", "CML", {"user": "UDANA", "channel": "terminal", "source": "shell"})
    assert any("A watch made in the terminal posts nowhere" in str(block) for block in render(template, context).blocks)
    [(template, context)] = watch()
    assert not any("terminal" in str(block) for block in render(template, context).blocks)


def test_a_long_tracebacks_last_lines_are_announced(watched):
    """The index keeps 1,000 characters of a tag: of an error tag, its end (a traceback's last line names
    the error; the notice showed the first frames, cut mid-word)."""
    frames = "".join(f'  File "/opt/train/module_{i}.py", line {100 + i}, in _call_impl\n    return forward(x)\n' for i in range(30))
    text = f"Traceback (most recent call last):\n{frames}torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert len(text) > 2000
    watch()
    crashed = end_run(watched, "oom", status="FAILED", tags={"labmate.error": text})
    replies, _keys = poll.poll()
    [failed] = [c for t, c, _k in _shown(replies) if c.get("run_id") == crashed]
    assert failed["error"].endswith("torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert failed["error"].splitlines()[0].startswith(("  File", "    return"))


def test_a_diverged_run_is_not_a_new_best_and_shows_what_it_logged(watched):
    """MLflow's SQL store keeps inf as the largest float: the watch announced it as a new best of 1.798e+308
    (rankings leave such runs out); a NaN metric vanished from the notice."""
    watch()
    diverged = end_run(watched, "diverged", f1=float("inf"))
    lost = end_run(watched, "lost", f1=float("nan"))
    replies, _keys = poll.poll()
    shown = {c.get("run_id"): (t, c) for t, c, _k in _shown(replies)}
    assert [t for t, _c in shown.values()] == ["watch_notice", "watch_notice"]
    assert shown[diverged][1]["metrics"][0] == {"key": "val_f1", "value": "inf"}
    assert shown[lost][1]["metrics"][0] == {"key": "val_f1", "value": "NaN"}


def test_a_grouped_message_lists_runs_by_name_and_names_cant_break_its_bold(watched, tmp_path: Path):
    from bot.messages.render import render

    configure(tmp_path, "watch_group_over = 2")
    watch()
    for name in ("c-run", "*a* run", "b-run"):
        end_run(watched, name, f1=0.5, ago_s=600)
    end_run(watched, "z-broken", status="FAILED")
    replies, _keys = poll.poll()
    [(template, context, _key)] = _shown(replies)
    assert [r["name"] for r in context["runs"]] == ["z-broken", "*a* run", "b-run", "c-run"]
    text = str(render(template, context).blocks)
    assert "in the last minute" not in text  # they ended ten minutes ago
    assert "*4 runs of sales-agent ended*: 3 finished, 1 failed." in text


@pytest.mark.postgres
@pytest.mark.parametrize("metrics", [1, 150], ids=["insert", "copy"])
def test_a_run_indexed_by_another_writer_meanwhile_is_replaced_not_a_failed_poll(
    watched, postgres_url: str, monkeypatch: pytest.MonkeyPatch, metrics: int
) -> None:
    """A launch's end writes its run into the index while a watch poll writes the same run: both found it
    missing, the poll's insert broke the primary key, and the poll logged "could not read the knowledge
    base" and announced the run a minute late. 150 metrics: PostgreSQL's COPY path, outside SQLAlchemy."""
    from models import run_index

    monkeypatch.setenv("LABMATE_DATABASE_URL", postgres_url)
    reset_settings()
    watch()
    store = run_index.store_key(watched.uri)
    record = run_index.RunRecord("f" * 32, watched.experiment_id, "raced", "FINISHED", "dana", 1, 2,
                                 metrics={f"m{i}": (0.5, 1, 2) for i in range(metrics)})  # fmt: skip
    real, raced = run_index._insert, []

    def first_another_writer(session, table, rows):
        if table is run_index.IndexedRun.__table__ and not raced:
            raced.append(True)
            with session_scope() as other:  # commits before this insert runs
                run_index.upsert(other, store, [record], now_ms=1)
        return real(session, table, rows)

    monkeypatch.setattr(run_index, "_insert", first_another_writer)
    with session_scope() as session:
        run_index.upsert(session, store, [record], now_ms=2)
    monkeypatch.setattr(run_index, "_insert", real)
    with session_scope() as session:
        assert raced and run_index.metrics_of(session, store, [record.run_id])[record.run_id]["m0"] == 0.5
        assert len(run_index.metrics_of(session, store, [record.run_id])[record.run_id]) == metrics
