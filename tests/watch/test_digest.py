"""The daily digest on a real MLflow store and knowledge base: what it counts, quiet days, one post per
(channel, day) under concurrency (PostgreSQL), and a channel the bot is not in (an admin told once)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from labmate.settings import reset_settings
from models import decision, launches
from models import watch as watches
from models.db import session_scope
from tasks.watch import digest
from tests.slack.conftest import fake_slack, slack_env  # noqa: F401
from tests.watch.conftest import ADMIN, configure, end_run


def _channel(name: str = "CDIGEST", at: str = "00:00", quiet: str = "line") -> tuple[str, ...]:
    return ("[[digest.channels]]", f'channel = "{name}"', f'at = "{at}"', 'timezone = "UTC"', f'quiet = "{quiet}"')


def test_the_digest_counts_the_last_day(watched) -> None:
    end_run(watched, "a", f1=0.5)
    end_run(watched, "b", f1=0.95)
    end_run(watched, "c", status="FAILED")
    end_run(watched, "d", status="KILLED")
    watched.client.create_run(watched.experiment_id, run_name="still-running")
    with session_scope() as session:
        decision.create(session, new=decision.NewDecision(text="ship bigram v2", author="U1", channel="C1"))
        launches.create(session, user="U1", channel="C1", project="quick", entry_point="main", params={}, experiment="x",
                        reply_to={}, task_id="t1")  # fmt: skip
    template, context = digest.build()  # type: ignore[misc]
    assert template == "digest" and not context["quiet"]
    [row] = context["experiments"]
    # killed is its own count, as in `summary` (the digest said "1 failed" for a failed and a killed run)
    assert (row["experiment"], row["started"], row["finished"], row["failed"], row["killed"]) == ("sales-agent", 5, 2, 1, 1)
    [best] = context["bests"]
    assert (best["name"], best["value"], best["previous_value"]) == ("b", "0.95", "0.86")
    assert context["launches"]["total"] == 1 and context["launches"]["counts"] == [{"status": "queued", "count": 1}]
    assert context["decision_count"] == 1 and context["decisions"][0]["text"] == "ship bigram v2"
    assert context["cleanup"] == []
    [chart] = context["files"]
    assert Path(chart["path"]).exists()
    from bot.messages.render import render

    message = render(template, context)
    assert "runs 5 started, 2 finished, 1 failed, 1 killed; launches 1; decisions 1" in message.text
    runs = next(b["text"]["text"] for b in message.blocks if b.get("text", {}).get("text", "").startswith("*Runs*"))
    assert runs.startswith("*Runs* (5 started · 2 finished · 1 failed · 1 killed)")
    assert runs.split("\n")[1].endswith(": 5 started · 2 finished · 1 failed · 1 killed")
    assert "regress" not in str(message.blocks).lower()  # no verdicts are recorded yet: nothing is said


def test_a_quiet_day_is_one_line_or_nothing(watched) -> None:
    """The sales-agent runs are from 2026-11-18: nothing happened in the last day."""
    template, context = digest.build()  # type: ignore[misc]
    assert context["quiet"] and context["files"] == []
    from bot.messages.render import render

    message = render(template, context)
    assert message.text.startswith("Daily digest: a quiet day") and len(message.blocks) == 1
    assert digest.build(quiet="none") is None


def test_a_digest_is_due_once_a_day_at_its_local_time(watched, tmp_path: Path) -> None:
    configure(tmp_path, tables=_channel("CPARIS", at="09:30"))
    before = datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
    assert digest.due(before) == []
    after = before + timedelta(hours=2)
    [item] = digest.due(after)
    assert (item.channel.channel, item.day) == ("CPARIS", "2026-11-29")
    [_key] = digest.claim_due(after)
    assert digest.claim_due(after) == [] and digest.due(after) == []
    assert digest.due(after + timedelta(days=1))  # the next day is due again


def test_the_local_day_follows_the_channels_time_zone() -> None:
    from labmate.settings import DigestChannel

    paris = DigestChannel(channel="C1", at="09:00", timezone="Europe/Paris")
    assert digest.local_day(paris, datetime(2026, 11, 29, 7, 59, tzinfo=UTC)) == ("2026-11-29", False)
    assert digest.local_day(paris, datetime(2026, 11, 29, 8, 0, tzinfo=UTC)) == ("2026-11-29", True)
    tokyo = DigestChannel(channel="C1", at="09:00", timezone="Asia/Tokyo")
    assert digest.local_day(tokyo, datetime(2026, 11, 29, 23, 0, tzinfo=UTC)) == ("2026-11-30", False)


def test_an_unknown_time_zone_is_a_one_line_configuration_error(tmp_path: Path) -> None:
    from labmate.settings import ConfigError, get_settings

    (tmp_path / "labmate.toml").write_text('[[digest.channels]]\nchannel = "C1"\ntimezone = "Mars/Olympus"\n')
    reset_settings()
    with pytest.raises((ConfigError, ValueError)) as caught:
        get_settings()
    assert "Mars/Olympus" in str(caught.value)


@pytest.mark.postgres
def test_two_digest_runs_at_once_on_postgresql_claim_one_post(watched, tmp_path: Path, postgres_url: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("LABMATE_DATABASE_URL", postgres_url)
    configure(tmp_path, tables=_channel())
    now = datetime.now(UTC)
    keys: list[str] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        barrier.wait()
        keys.extend(digest.claim_due(now))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 1
    with session_scope() as session:
        assert watches.digest_of(session, channel="CDIGEST", day=now.date().isoformat()) is not None


def test_a_digest_channel_the_bot_is_not_in_tells_an_admin_once(watched, slack_env, tmp_path: Path) -> None:  # noqa: F811
    from bot.post import reset_router, router
    from tasks.client import enqueue, wait

    configure(tmp_path, tables=_channel("CNOTIN"))
    reset_router()
    router()  # what `labmate worker` installs: replies go to (fake) Slack
    slack_env.refuse_posts("CNOTIN")
    end_run(watched, "a", f1=0.5)
    for day in (0, 1):
        now = datetime.now(UTC) + timedelta(days=day)
        [key] = digest.claim_due(now)
        with session_scope() as session:
            from models import jobs

            kwargs = dict(jobs.get(session, key=key).kwargs)  # type: ignore[union-attr]
        assert wait([enqueue(digest.POST_TASK, kwargs, track=True, job_id=key)], timeout=60) == ["undelivered"]
        with session_scope() as session:
            row = watches.digest_of(session, channel="CNOTIN", day=kwargs["day"])
            assert row is not None and row.state == "undelivered" and "not_in_channel" in row.outcome
    told = slack_env.posted(ADMIN)
    assert len(told) == 1 and "I'm not a member of that channel" in str(told[0].params)
    assert slack_env.posted("CNOTIN") == []


def test_labmates_own_regression_reports_are_not_in_the_digest(watched) -> None:
    """labmate logs each regression run to MLflow (`labmate-regressions`); those have their own cards
    and aren't the team's experiments: no counts, no "new best baseline.pass_rate"."""
    from tasks.mlflow_io.regressions import EXPERIMENT

    reports = watched.client.create_experiment(EXPERIMENT)
    report = watched.client.create_run(reports, run_name="regress sales_agent")
    watched.client.log_metric(report.info.run_id, "baseline.pass_rate", 1.0)
    watched.client.set_terminated(report.info.run_id, "FINISHED")
    end_run(watched, "a", f1=0.5)
    _template, context = digest.build()  # type: ignore[misc]
    assert [row["experiment"] for row in context["experiments"]] == ["sales-agent"]
    assert EXPERIMENT not in str(context["bests"])


def test_a_new_best_names_the_previous_best_it_beat_even_inside_the_day(watched) -> None:
    """An experiment whose every run ended within the day (the demo, then a launch): the new best beat the
    best of the runs that finished before it, not "its first ranked run"."""
    fresh = watched.client.create_experiment("fresh", artifact_location=str(watched.root / "fresh"))
    end_run(watched, "one", f1=0.7, experiment_id=fresh)
    end_run(watched, "two", f1=0.8, experiment_id=fresh)
    end_run(watched, "crashed", status="FAILED", f1=0.99, experiment_id=fresh)  # a failed run is not ranked
    end_run(watched, "three", f1=0.9, experiment_id=fresh)
    end_run(watched, "after", f1=0.75, experiment_id=fresh)  # ended after the best: not what it beat
    template, context = digest.build()  # type: ignore[misc]
    best = next(b for b in context["bests"] if b["experiment"] == "fresh")
    assert (best["name"], best["metric"], best["value"], best["first"]) == ("three", "val_f1", "0.9", False)
    assert (best["previous"], best["previous_value"], best["delta"]) == ("two", "0.8", "+0.1")
    from bot.messages.render import render

    shown = str(render(template, context).blocks)
    assert ":trophy: fresh: *three*, val_f1 *0.9* (+0.1 on the previous best, *two*, 0.8)" in shown
    assert "its first ranked run" not in shown


def test_the_first_ranked_run_of_an_experiment_is_said_to_be_one(watched) -> None:
    fresh = watched.client.create_experiment("fresh", artifact_location=str(watched.root / "fresh"))
    end_run(watched, "only", f1=0.7, experiment_id=fresh)
    _template, context = digest.build()  # type: ignore[misc]
    best = next(b for b in context["bests"] if b["experiment"] == "fresh")
    assert best["first"] and best["previous"] == "" and best["delta"] == ""


def _made(channel: str, day: str, now: datetime, outcome: str = "ok") -> dict:
    with session_scope() as session:
        assert watches.claim_digest(session, channel=channel, day=day)
    [(_template, context)] = digest.post_work(channel, day, now)
    digest.settle(channel, day, outcome, "" if outcome == "ok" else "channel_not_found")
    return context


def _decided_at(*when: datetime) -> None:
    from sqlalchemy import update

    for at in when:
        with session_scope() as session:
            made = decision.create(session, new=decision.NewDecision(text=f"at {at:%d %H:%M}", author="U1"))
            session.execute(update(decision.Decision).where(decision.Decision.id == made.id).values(created_at=at))


def test_each_digest_covers_from_where_the_last_one_ended_to_its_days_time(watched, tmp_path: Path) -> None:
    """The window is fixed by the day and the last posted digest, not by when the job runs: a digest posted
    late, a clock change, a digest Slack refused and a week beat was down neither skip nor repeat anything."""
    configure(tmp_path, tables=('[[digest.channels]]', 'channel = "CPARIS"', 'at = "09:00"', 'timezone = "Europe/Paris"'))
    z = UTC
    _decided_at(datetime(2026, 10, 23, 12, 0, tzinfo=z), datetime(2026, 10, 24, 7, 30, tzinfo=z),
                datetime(2026, 10, 24, 14, 0, tzinfo=z), datetime(2026, 10, 25, 7, 59, tzinfo=z))
    # posted six hours late (beat was down at 09:00): still the day before 09:00 CEST, not 15:00 to 15:00
    late = _made("CPARIS", "2026-10-24", datetime(2026, 10, 24, 13, 0, tzinfo=z))
    assert (late["since"], late["until"]) == (datetime(2026, 10, 23, 7, 0, tzinfo=z), datetime(2026, 10, 24, 7, 0, tzinfo=z))
    assert [d["text"] for d in late["decisions"]] == ["at 23 12:00"]
    # clocks go back that night: 09:00 CET is 08:00 UTC, a 25-hour day; 09:30 CEST on the 24th is in it
    after_dst = _made("CPARIS", "2026-10-25", datetime(2026, 10, 25, 8, 1, tzinfo=z))
    assert (after_dst["since"], after_dst["until"]) == (datetime(2026, 10, 24, 7, 0, tzinfo=z),
                                                        datetime(2026, 10, 25, 8, 0, tzinfo=z))
    assert sorted(d["text"] for d in after_dst["decisions"]) == ["at 24 07:30", "at 24 14:00", "at 25 07:59"]
    # a digest Slack refused: the next one covers its day too
    _made("CPARIS", "2026-10-26", datetime(2026, 10, 26, 8, 0, tzinfo=z), outcome="undelivered")
    next_one = _made("CPARIS", "2026-10-27", datetime(2026, 10, 27, 8, 0, tzinfo=z))
    assert next_one["since"] == datetime(2026, 10, 25, 8, 0, tzinfo=z)
    # a digest posted late, after Slack refused its retries (the reaper sent its job again): delivered, so the
    # next one starts where it ended instead of repeating its day
    _made("CPARIS", "2026-10-28", datetime(2026, 10, 28, 8, 0, tzinfo=z), outcome="undelivered")
    digest.settle("CPARIS", "2026-10-28", "ok", "")
    with session_scope() as session:
        assert watches.digest_of(session, channel="CPARIS", day="2026-10-28").state == watches.DELIVERED
    assert _made("CPARIS", "2026-10-29", datetime(2026, 10, 29, 8, 0, tzinfo=z))["since"] == datetime(2026, 10, 28, 8, 0, tzinfo=z)
    # beat down for two weeks: the next digest covers the last week, not the whole gap
    back = _made("CPARIS", "2026-11-10", datetime(2026, 11, 10, 8, 30, tzinfo=z))
    assert (back["since"], back["until"]) == (datetime(2026, 11, 3, 8, 0, tzinfo=z), datetime(2026, 11, 10, 8, 0, tzinfo=z))


def test_a_digest_made_before_its_time_covers_up_to_now(migrated) -> None:
    from labmate.settings import DigestChannel

    now = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
    since, until = digest.window(DigestChannel(channel="CX", at="09:00", timezone="UTC"), "2026-11-30", now)
    assert (since, until) == (datetime(2026, 11, 29, 9, 0, tzinfo=UTC), now)


def test_digest_now_covers_up_to_now_and_the_next_digest_starts_there(migrated) -> None:
    from labmate.settings import DigestChannel

    now = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
    channel = DigestChannel(channel="CX", at="09:00", timezone="UTC")
    assert digest.window(channel, "2026-11-30", now, up_to_now=True) == (datetime(2026, 11, 29, 9, 0, tzinfo=UTC), now)
    with session_scope() as session:
        watches.claim_digest(session, channel="CX", day="2026-11-30")
        watches.set_covered(session, channel="CX", day="2026-11-30", until=now)
        watches.digest_done(session, channel="CX", day="2026-11-30", state=watches.DELIVERED)
    tomorrow = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert digest.window(channel, "2026-12-01", tomorrow) == (now, tomorrow)


def test_the_new_bests_shown_are_the_busiest_experiments_and_the_rest_are_counted(watched, monkeypatch) -> None:
    """With more experiments with a new best than the message shows, the busiest are shown and the others
    counted (the section was cut at Slack's limit mid-list, silently, the busiest one lost)."""
    monkeypatch.setattr(digest, "SHOWN_BESTS", 2)
    for name, runs in (("quiet-a", 1), ("busy", 4), ("quiet-b", 1), ("middling", 2)):
        eid = watched.client.create_experiment(name, artifact_location=str(watched.root / name))
        for i in range(runs):
            end_run(watched, f"{name}-{i}", f1=0.5 + i / 10, experiment_id=eid)
    template, context = digest.build()  # type: ignore[misc]
    assert [b["experiment"] for b in context["bests"]] == ["busy", "middling"]
    assert context["more_bests"] == 2
    from bot.messages.render import render

    assert "…and 2 more experiments with a new best" in str(render(template, context).blocks)


def test_names_inside_bold_cant_close_it(watched) -> None:
    eid = watched.client.create_experiment("*x* ~y~", artifact_location=str(watched.root / "odd"))
    end_run(watched, "*star* run", f1=0.7, experiment_id=eid)
    template, context = digest.build()  # type: ignore[misc]
    from bot.messages.render import render

    shown = str(render(template, context).blocks)
    assert "*∗x∗ ~y~*:" in shown and "*∗star∗ run*" in shown
