"""regress, regressions and promote through dispatch (the path every front takes): what is refused is
refused before anything is stored, with a message that says what was wrong and what would work."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from bot import dispatch
from bot.origin import Origin, Reply
from labmate.regress_cli import register
from labmate.settings import reset_settings
from models import audit, jobs, regressions
from models.db import session_scope
from tests.regressions.conftest import ADMIN, PROMOTER, write_toml


@pytest.fixture(autouse=True)
def broker_down(monkeypatch: pytest.MonkeyPatch) -> None:
    """No job leaves these tests: what dispatch stored stays in the outbox."""

    def refuse(*args: Any, **kwargs: Any) -> str:
        raise ConnectionError("the broker is down (test)")

    monkeypatch.setattr("tasks.client.enqueue", refuse)


def ask(text: str, user: str = "U0ALICE", channel: str = "C0LAB") -> Reply:
    return dispatch.handle(text, Origin(user=user, channel=channel, source="slack"))


def message(reply: Reply) -> str:
    return str(reply.context.get("message", ""))


def stored() -> tuple[int, int]:
    with session_scope() as session:
        return session.query(regressions.RegressionRun).count(), session.query(jobs.JobRecord).count()


def outcomes() -> list[str]:
    with session_scope() as session:
        return [e.outcome for e in reversed(audit.latest(session, limit=100))]


LISTED = "Suites you can run: `shop` (suites/shop.yaml)."


@pytest.mark.parametrize(
    ("text", "expected", "hint"),
    [
        ("regress nope", "There is no suite `nope` in `suites/`.", LISTED),
        ("regress ../shop.yaml", "`../shop.yaml` leads outside the suites folder (`suites/`); only suites in it can be run.",
         LISTED),
        ("regress suites/../../etc/x.yaml", "`suites/../../etc/x.yaml` leads outside the suites folder", LISTED),
        ("regress /etc/passwd", "`/etc/passwd` is an absolute path; from chat only suites in `suites/` can be run.", LISTED),
        ("regress shop workers:9", "`workers:9` is more than allowed: at most 4 (labmate.toml `[regress] max_workers`).",
         "e.g. `workers:4`"),
        ("regress shop workers:0", "`workers:0` must be at least 1, e.g. `workers:2`.", ""),
        ("regress shop candidate:http://10.0.0.1/agent", "`http://10.0.0.1/agent` is an HTTP endpoint; from chat the "
         "candidate must be an MLflow model", ""),
        ("regress shop baseline:<https://evil.example/x|evil.example/x>", "`https://evil.example/x` is an HTTP endpoint; "
         "from chat the baseline must be an MLflow model", ""),
        ("regress shop candidate:os:system", "`os:system` is not a target I can run from chat: the candidate must be an "
         "MLflow model", ""),
        ("regress shop candidate:file:///etc/model", "`file:///etc/model` is not a target I can run from chat", ""),
        ("regress shop candidate:models:/shop@", "`models:/shop@` is not a model MLflow can load: the candidate is "
         "written like `models:/sales-agent@candidate`, `models:/sales-agent/3` or `runs:/<run id>/model`.", ""),
        ("regress shop baseline:runs:/0a1b2c", "`runs:/0a1b2c` is not a model MLflow can load: the baseline is", ""),
        ("regress shop candidate:models:/shop/99999999999999999999999", "`models:/shop/99999999999999999999999` names "
         "version 99999999999999999999999, and no model has that many: MLflow counts versions from 1.", ""),
        ("regress shop tag:nope", "no conversation is tagged nope; tags: p0, p1", ""),
        ("regress shop frobnicate", "I don't understand `frobnicate`: after the suite, write `candidate:<uri>`", ""),
        ("regress", "Which suite? Name it first", ""),
    ],
)
def test_bad_regressions_are_refused_before_anything_is_stored(configured, text: str, expected: str, hint: str) -> None:
    reply = ask(text)
    assert reply.outcome == "user_error"
    assert message(reply).startswith(expected), message(reply)
    assert reply.context["hint"].startswith(hint), reply.context["hint"]
    assert stored() == (0, 0)
    assert outcomes() == ["user_error"]


def test_no_suites_says_where_the_folder_is_looked_for(configured, suites_dir: Path) -> None:
    for suite in suites_dir.iterdir():
        suite.unlink()
    reply = ask("regress shop")
    assert reply.context["hint"] == ("There are no suites in `suites/` (relative to the directory labmate runs in; "
                                     "labmate.toml `[regress] folders` names others).")


def test_a_suite_without_a_candidate_asks_for_one(configured, suites_dir: Path) -> None:
    (suites_dir / "bare.yaml").write_text("suite: bare\nconversations:\n  - id: a\n    turns:\n      - user: hi\n")
    reply = ask("regress bare")
    assert message(reply) == ("`bare` names no candidate target: say which model to test, e.g. "
                              "`regress bare candidate:models:/<model>@candidate`.")
    assert stored() == (0, 0)


def test_a_link_that_leaves_the_suites_folder_is_refused(configured, suites_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text((suites_dir / "shop.yaml").read_text())
    (suites_dir / "sneaky.yaml").symlink_to(outside)
    reply = ask("regress sneaky")
    assert message(reply).startswith("`sneaky` is a link that leads outside the suites folder (`suites/`)")
    assert "sneaky" not in reply.context["hint"], "the listing leaves it out too"
    assert stored() == (0, 0)


def test_a_suite_that_fails_validation_says_file_and_line_as_the_cli_does(configured, suites_dir: Path) -> None:
    (suites_dir / "broken.yaml").write_text(
        "suite: broken\nconversations:\n  - id: one\n    turns:\n      - user: hi\n        expect:\n"
        "          - contians: hello\n"
    )
    reply = ask("regress broken")
    app = typer.Typer()
    register(app)
    app.command("other")(lambda: None)
    cli = CliRunner().invoke(app, ["regress", "suites/broken.yaml"])
    assert cli.exit_code == 2
    said = " ".join(cli.output.split()).removeprefix("error: ")
    assert message(reply) == said
    assert message(reply).startswith("suites/broken.yaml:7: ")
    assert reply.context["hint"] == "`labmate regress suites/broken.yaml` says the same in a terminal."
    assert stored() == (0, 0)


def test_http_targets_are_allowed_where_labmate_toml_says_so(configured, tmp_path: Path) -> None:
    write_toml(tmp_path / "labmate.toml", '[regress.suites.shop]\nallow_http = true\n')
    reply = ask("regress shop candidate:http://127.0.0.1:9/agent")
    assert reply.outcome == "ok", message(reply)
    with session_scope() as session:
        [run] = session.query(regressions.RegressionRun).all()
        assert run.targets == {"baseline": "models:/shop@production", "candidate": "http://127.0.0.1:9/agent"}


def test_a_suite_named_by_the_path_the_listing_shows_runs(configured) -> None:
    """The listing says `shop` (suites/shop.yaml); pasting the path said "There is no suite … in `suites/`"."""
    assert ask("regress suites/shop.yaml").outcome == "ok"


def test_the_terminal_command_a_refusal_suggests_keeps_what_was_asked(configured) -> None:
    """It dropped `tag:`, so run as shown it ran the whole suite and passed."""
    reply = ask("regress shop tag:nope candidate:models:/shop/2")
    assert reply.outcome == "user_error"
    assert reply.context["hint"] == ("`labmate regress suites/shop.yaml --candidate models:/shop/2 --tag nope` says "
                                     "the same in a terminal.")
    assert stored() == (0, 0)


def test_a_run_is_stored_with_its_jobs_before_they_are_sent(configured) -> None:
    reply = ask("regress shop.yaml tag:p1 workers:2")
    assert reply.outcome == "ok"
    assert "The job queue is unreachable" in reply.notes[0]
    with session_scope() as session:
        [run] = session.query(regressions.RegressionRun).all()
        assert (run.suite, run.status, run.total, run.chunks, run.workers, run.tags) == ("shop", "queued", 6, 1, 2, ["p1"])
        queued = {j.task for j in session.query(jobs.JobRecord).all()}
    assert queued == {"labmate.regress.start", "labmate.regressions.card"}


def make_run(status: str, *, suite: str = "shop", reason: str = "", version: str | None = "2") -> int:
    with session_scope() as session:
        run = regressions.create(
            session, user="U0ALICE", channel="C0LAB", suite=suite, suite_file="suites/shop.yaml",
            targets={"candidate": "models:/shop@candidate"}, tags=[], gate={}, workers=1, chunks=1, total=1,
            reply_to={"source": "slack", "channel": "C0LAB"}, task_id=f"t-{status}-{reason}"[:60], report_job="",
        )
        run.status, run.reason, run.candidate_model, run.candidate_version = status, reason, "shop", version
        return run.id


def test_promote_refusals(configured) -> None:
    failed = make_run(regressions.FAILED, reason="candidate pass rate 50.0% is below min_pass_rate 75.0%")
    reply = ask(f"promote R{failed}", user=PROMOTER)
    assert message(reply) == (f"R{failed} can't be promoted: its verdict is *failed* (candidate pass rate 50.0% is below "
                              "min_pass_rate 75.0%). Only a run whose gate passed can be.")
    unregistered = make_run(regressions.PASSED, version=None)
    assert "is not a registered model version, so there is no alias to move" in message(ask(f"promote R{unregistered}", user=PROMOTER))
    passed = make_run(regressions.PASSED)
    denied = ask(f"promote R{passed}", user="U0MALLORY")
    assert denied.outcome == "refused"
    assert message(denied).startswith(f"You can't promote R{passed}: promoting is for <@{PROMOTER}> and the admins")
    assert denied.context["hint"] == ("Whoever runs labmate adds people (or a Slack user group) to `[regress] promoters` "
                                      "in labmate.toml.")
    newer = make_run(regressions.ERROR, reason="It could not finish: its worker stopped 4 times while running it.")
    blocked = ask(f"promote R{passed}", user=PROMOTER)
    assert message(blocked) == (f"R{passed} can't be promoted: a newer run of `shop`, R{newer}, could not finish: its "
                                "worker stopped 4 times while running it.")  # not "could not finish: It could not finish"
    assert message(ask(f"promote R{newer}", user=PROMOTER)) == (
        f"R{newer} can't be promoted: it could not finish (its worker stopped 4 times while running it). Only a run "
        "whose gate passed can be.")
    assert message(ask("promote R999", user=PROMOTER)) == "There is no regression run R999."
    with session_scope() as session:
        assert all(r.promoted_by is None for r in session.query(regressions.RegressionRun).all())


def test_a_passed_run_older_than_a_promoted_one_cannot_move_the_alias_back(configured) -> None:
    """A stale card's Promote (or `promote R1` typed from memory) after a newer run was promoted would roll
    production back to a candidate compared with the production before it."""
    older = make_run(regressions.PASSED, version="3")
    newer = make_run(regressions.PASSED, version="4")
    assert ask(f"promote R{newer}", user=PROMOTER).template == "regress_promoting"
    stale = ask(f"promote R{older}", user=PROMOTER)
    assert message(stale) == (
        f"R{older} can't be promoted: a newer run of `shop`, R{newer}, was promoted since (`shop v4` to `@production`). "
        f"Promoting R{older} would move the alias back to a candidate compared with the production before it. "
        "`regress shop` compares it with today's.")
    other_suite = make_run(regressions.PASSED, suite="other", version="5")
    assert ask(f"promote R{other_suite}", user=PROMOTER).template == "regress_promoting"
    with session_scope() as session:
        promoted = {r.id for r in session.query(regressions.RegressionRun).all() if r.promoted_by}
        assert promoted == {newer, other_suite}
        assert session.query(jobs.JobRecord).filter_by(task="labmate.regressions.promote").count() == 2


def test_an_older_runs_promote_job_after_a_newer_ones_moves_nothing(configured, mlflow_uri: str) -> None:
    """Both presses accepted, the older run's first; the newer run's job ran first, as a worker free
    sooner may. The older run's job must not move the alias back."""
    from mlflow import MlflowClient

    from labmate.errors import LabmateError
    from models import decision
    from tasks.regressions import work

    older = make_run(regressions.PASSED, version="2")
    newer = make_run(regressions.PASSED, version="3")
    assert ask(f"promote R{older}", user=PROMOTER).template == "regress_promoting"
    assert ask(f"promote R{newer}", user=PROMOTER).template == "regress_promoting"
    work.promote(newer)
    with pytest.raises(LabmateError) as refused:
        work.promote(older)
    assert refused.value.message == (
        f"R{older} was not promoted: a newer run of `shop`, R{newer}, was promoted meanwhile (`shop v3`), and moving "
        "`@production` back to v2 would undo that. Nothing moved.")
    assert str(MlflowClient(tracking_uri=mlflow_uri).get_model_version_by_alias("shop", "production").version) == "3"
    with session_scope() as session:
        assert regressions.get(session, run_id=older).promoted_by is None
        assert [d.text for d in session.query(decision.Decision).all()] == [
            f"Promoted shop v3 to @production after regression run R{newer} of suite shop passed its gate (replacing v1)."]


def test_promoting_an_older_promoted_run_again_says_what_moved_since(configured, mlflow_uri: str) -> None:
    """It said "`shop v2` is `@production`" though a newer run had moved the alias to v3."""
    from tasks.regressions import work

    older = make_run(regressions.PASSED, version="2")
    assert ask(f"promote R{older}", user=PROMOTER).template == "regress_promoting"
    work.promote(older)
    assert message(ask(f"promote R{older}", user=PROMOTER)) == (
        f"R{older} was already promoted by <@{PROMOTER}>: that made `shop v2` `@production`. It is promoted once; "
        "nothing changed.")
    newer = make_run(regressions.PASSED, version="3")
    assert ask(f"promote R{newer}", user=PROMOTER).template == "regress_promoting"
    assert message(ask(f"promote R{older}", user=PROMOTER)).endswith(
        f"Since then R{newer} is moving `@production` to `shop v3`. It is promoted once; nothing changed.")
    work.promote(newer)
    assert message(ask(f"promote R{older}", user=PROMOTER)) == (
        f"R{older} was already promoted by <@{PROMOTER}>: that made `shop v2` `@production`. Since then R{newer} "
        "moved `@production` to `shop v3`. It is promoted once; nothing changed.")


@pytest.mark.parametrize("newer_promoted_meanwhile", [False, True], ids=["copy-finished", "newer-run-promoted"])
def test_a_paused_promote_job_resumed_after_its_copy_finished_logs_nothing_and_undoes_nothing(
    configured, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch, newer_promoted_meanwhile: bool
) -> None:
    """A worker paused (not dead) in the alias move: the reaper re-sent the job, its copy finished the press
    and, in the worse case, a newer run was promoted. Resumed, the paused job moved @production back to
    the older candidate and logged the decision a second time."""
    from mlflow import MlflowClient

    from models import decision
    from tasks.mlflow_io import regressions as mlflow_regressions
    from tasks.regressions import work

    older = make_run(regressions.PASSED, version="2")
    assert ask(f"promote R{older}", user=PROMOTER).template == "regress_promoting"
    newer = make_run(regressions.PASSED, version="3") if newer_promoted_meanwhile else None
    real, paused = mlflow_regressions.move_alias, []

    def paused_in_the_move(model: str, alias: str, version: str) -> None:
        if not paused:  # the first copy stops here; meanwhile the reaper's copy (and a newer press) run
            paused.append(version)
            monkeypatch.setattr(mlflow_regressions, "move_alias", real)
            work.promote(older)
            if newer is not None:
                assert ask(f"promote R{newer}", user=PROMOTER).template == "regress_promoting"
                work.promote(newer)
        real(model, alias, version)

    monkeypatch.setattr(mlflow_regressions, "move_alias", paused_in_the_move)
    work.promote(older)
    production = MlflowClient(tracking_uri=mlflow_uri).get_model_version_by_alias("shop", "production").version
    assert str(production) == ("3" if newer_promoted_meanwhile else "2")
    with session_scope() as session:
        texts = [d.text for d in session.query(decision.Decision).order_by(decision.Decision.id).all()]
        promoted = regressions.get(session, run_id=older)
        assert promoted is not None and promoted.promotion["decision_id"] == 1
    assert len(texts) == (2 if newer_promoted_meanwhile else 1) and texts[0].startswith("Promoted shop v2")


def test_a_promote_whose_alias_was_moved_by_hand_already_says_nothing_moved(configured, mlflow_uri: str) -> None:
    """The decision read "Promoted shop v2 to @production" and a later press "that made shop v2 @production"
    though someone had moved the alias by hand and labmate moved nothing."""
    from mlflow import MlflowClient

    from models import decision
    from tasks.regressions import work

    MlflowClient(tracking_uri=mlflow_uri).set_registered_model_alias("shop", "production", "2")
    run_id = make_run(regressions.PASSED, version="2")
    assert ask(f"promote R{run_id}", user=PROMOTER).template == "regress_promoting"
    work.promote(run_id)
    with session_scope() as session:
        [made] = session.query(decision.Decision).all()
        assert made.text.endswith("passed its gate (it already pointed there: nothing moved).")
    assert message(ask(f"promote R{run_id}", user=PROMOTER)).startswith(
        f"R{run_id} was already promoted by <@{PROMOTER}>: that found `shop v2` `@production`.")


def test_promote_jobs_run_in_press_order_both_move_the_alias(configured, mlflow_uri: str) -> None:
    """A newer run's press accepted but its job not started doesn't stop the older run's job: the alias
    goes to v2, then to v3 (it refused, and if the newer job then failed nothing was promoted)."""
    from mlflow import MlflowClient

    from models import decision
    from tasks.regressions import work

    older = make_run(regressions.PASSED, version="2")
    newer = make_run(regressions.PASSED, version="3")
    assert ask(f"promote R{older}", user=PROMOTER).template == "regress_promoting"
    assert ask(f"promote R{newer}", user=PROMOTER).template == "regress_promoting"
    work.promote(older)
    work.promote(newer)
    assert str(MlflowClient(tracking_uri=mlflow_uri).get_model_version_by_alias("shop", "production").version) == "3"
    with session_scope() as session:
        assert len(session.query(decision.Decision).all()) == 2


def test_a_promote_job_run_again_after_dying_between_the_move_and_its_decision_says_what_moved(
    configured, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker died after moving the alias and before the decision: the job run again found the alias at
    the candidate already and said "nothing moved", and the decision lost which version it replaced."""
    from models import decision
    from tasks.regressions import work

    class Died(BaseException):
        """What a killed worker leaves: nothing after this line runs (no `except Exception` sees it)."""

    run_id = make_run(regressions.PASSED, version="2")
    assert ask(f"promote R{run_id}", user=PROMOTER).template == "regress_promoting"
    real = decision.create

    def dies(*args: Any, **kwargs: Any) -> Any:
        raise Died

    monkeypatch.setattr(decision, "create", dies)
    with pytest.raises(Died):
        work.promote(run_id)
    monkeypatch.setattr(decision, "create", real)
    [(template, context), _card] = work.promote(run_id)
    assert (template, context["before"], context["already"]) == ("regress_promoted", "1", False)
    with session_scope() as session:
        assert [d.text for d in session.query(decision.Decision).all()] == [
            f"Promoted shop v2 to @production after regression run R{run_id} of suite shop passed its gate (replacing v1)."]


def test_a_decision_the_database_refuses_after_the_move_says_so_and_the_next_press_logs_it(
    configured, mlflow_uri: str
) -> None:
    """The alias moved, then the database refused the decision (here a trigger; not an outage, which the
    job waits out). The run said "being promoted" for ever: every later press was told to wait."""
    from mlflow import MlflowClient
    from sqlalchemy import text

    from bot.messages.render import render
    from labmate.settings import get_settings
    from models.db import engine_for
    from tasks.regressions import cards, work

    run_id = make_run(regressions.PASSED, version="2")
    assert ask(f"promote R{run_id}", user=PROMOTER).template == "regress_promoting"
    kb = engine_for(get_settings().database_url)
    with kb.begin() as connection:
        connection.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON decisions "
                                "BEGIN SELECT RAISE(ABORT, 'decisions are read-only'); END"))
    [(template, context), (card, shown)] = work.promote(run_id)
    assert (template, context["outcome"]) == ("error", "error") and context["error_id"]
    assert context["message"] == (
        f"`shop v2` is `@production` now, but the decision recording it could not be logged, so R{run_id} is not marked "
        f"promoted yet. Press *Promote candidate* again (or type `promote R{run_id}`) to log it; the alias stays where it is.")
    assert card == cards.TEMPLATE and shown["promotable"]
    rendered = json.dumps(render(card, shown).blocks)
    assert "The last Promote stopped: the decision recording it could not be logged. Promote again to finish it." in rendered
    assert "Promote candidate" in rendered and "Being promoted" not in rendered
    client = MlflowClient(tracking_uri=mlflow_uri)
    assert str(client.get_model_version_by_alias("shop", "production").version) == "2"

    with kb.begin() as connection:
        connection.execute(text("DROP TRIGGER refuse"))
    make_run(regressions.FAILED, reason="pass rate dropped")  # a newer run failed since: it doesn't stop finishing
    _a_press_finishes_it(run_id, ADMIN)
    with session_scope() as session:
        assert "stopped" not in regressions.get(session, run_id=run_id).promotion


def _a_press_finishes_it(run_id: int, user: str) -> None:
    """A press on a stopped promotion: its decision logged once, naming the version from before the first press."""
    from models import decision
    from tasks.regressions import work

    assert ask(f"promote R{run_id}", user=user).template == "regress_promoting"
    [(template, context), _card] = work.promote(run_id)
    assert (template, context["before"], context["already"]) == ("regress_promoted", "1", False)
    with session_scope() as session:
        assert [d.text for d in session.query(decision.Decision).all()] == [
            f"Promoted shop v2 to @production after regression run R{run_id} of suite shop passed its gate (replacing v1)."]


def test_a_promote_job_the_reaper_gives_up_releases_the_run_and_says_how_to_finish(configured, mlflow_uri: str) -> None:
    """Its worker kept dying (or the terminal that ran it ended), perhaps after the alias moved: the run
    stayed "being promoted" and the person who pressed was told that nothing half-done was kept."""
    from datetime import timedelta

    from models.base import utcnow
    from tasks.maintenance import reap

    run_id = make_run(regressions.PASSED, version="2")
    assert ask(f"promote R{run_id}", user=PROMOTER, channel="C0LAB").template == "regress_promoting"
    with session_scope() as session:
        [job] = session.query(jobs.JobRecord).filter_by(task="labmate.regressions.promote").all()
        key = job.key
        job.state, job.rescues, job.enqueued_at = jobs.RUNNING, jobs.MAX_RESCUES, utcnow()
        job.heartbeat_at = utcnow() - timedelta(minutes=5)
        regressions.set_promotion(session, run_id=run_id, promotion={"alias": "production", "moving_from": "1"})
    assert reap().given_up == [key]
    with session_scope() as session:
        run = regressions.get(session, run_id=run_id)
        assert run.promoted_by is None
        assert run.promotion == {"alias": "production", "moving_from": "1",
                                 "stopped": "its worker stopped 4 times while running it"}
        stored = {j.key: j for j in session.query(jobs.JobRecord).all()}
    assert stored[f"{key}/card"].task == "labmate.regressions.card"
    told = stored[f"{key}/stopped"].kwargs["context"]["message"]
    assert told == (f"Promoting R{run_id} stopped: its worker stopped 4 times while running it. `@production` of `shop` "
                    f"may have moved to v2 already. Press *Promote candidate* again (or type `promote R{run_id}`) to "
                    "finish: it moves the alias only if it hasn't, and logs the decision.")
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=mlflow_uri).set_registered_model_alias("shop", "production", "2")  # it had moved
    _a_press_finishes_it(run_id, PROMOTER)


def test_a_promote_job_given_up_after_logging_its_decision_stays_promoted(configured, mlflow_uri: str) -> None:
    """Its work was done and only its reply undelivered when the reaper gave it up: releasing the run would
    offer Promote again and a second press would log a second decision."""
    from datetime import timedelta

    from models import decision
    from models.base import utcnow
    from tasks.maintenance import reap
    from tasks.regressions import work

    run_id = make_run(regressions.PASSED, version="2")
    assert ask(f"promote R{run_id}", user=PROMOTER).template == "regress_promoting"
    work.promote(run_id)
    with session_scope() as session:
        [job] = session.query(jobs.JobRecord).filter_by(task="labmate.regressions.promote").all()
        key = job.key
        job.state, job.rescues, job.enqueued_at = jobs.RUNNING, jobs.MAX_RESCUES, utcnow()
        job.heartbeat_at = utcnow() - timedelta(minutes=5)
    assert reap().given_up == [key]
    with session_scope() as session:
        run = regressions.get(session, run_id=run_id)
        assert run.promoted_by == PROMOTER and run.promotion["decision_id"] == 1 and "stopped" not in run.promotion
        stored = {j.key for j in session.query(jobs.JobRecord).all()}
    assert f"{key}/card" in stored and f"{key}/stopped" not in stored
    assert message(ask(f"promote R{run_id}", user=ADMIN)).startswith(f"R{run_id} was already promoted by")
    with session_scope() as session:
        assert session.query(decision.Decision).count() == 1


def test_a_newer_run_whose_promote_stopped_after_the_move_still_keeps_older_runs_off_the_alias(configured) -> None:
    older = make_run(regressions.PASSED, version="3")
    newer = make_run(regressions.PASSED, version="2")
    with session_scope() as session:  # what a newer run's stopped Promote leaves: released, the move recorded
        regressions.set_promotion(session, run_id=newer, promotion={"alias": "production", "moving_from": "1",
                                                                    "stopped": "the decision recording it could not be logged"})
    assert message(ask(f"promote R{older}", user=PROMOTER)) == (
        f"R{older} can't be promoted: a newer run of `shop`, R{newer}, may have moved the alias since (its Promote "
        f"stopped) (`shop v2` to `@production`). Promoting R{older} would move the alias back to a candidate compared "
        "with the production before it. `regress shop` compares it with today's.")


def test_a_release_by_the_reaper_takes_the_run_from_the_press_it_served(configured) -> None:
    """A job the reaper gave up as dead may still be running: once the run is released and pressed again, the
    first job's last writes must not count (it checks the press it serves before each)."""
    run_id = make_run(regressions.PASSED, version="2")
    assert ask(f"promote R{run_id}", user=PROMOTER).template == "regress_promoting"
    with session_scope() as session:
        first = regressions.get(session, run_id=run_id).promoted_at
        assert regressions.holds_promotion(session, run_id=run_id, token=first)
        assert regressions.release_promotion(session, run_id=run_id, stopped="its worker stopped")
    assert ask(f"promote R{run_id}", user=ADMIN).template == "regress_promoting"
    with session_scope() as session:
        second = regressions.get(session, run_id=run_id).promoted_at
        assert not regressions.holds_promotion(session, run_id=run_id, token=first)
        assert regressions.holds_promotion(session, run_id=run_id, token=second)
        assert not regressions.release_promotion(session, run_id=run_id, token=first)
        assert regressions.get(session, run_id=run_id).promoted_by == ADMIN


def test_two_presses_at_once_promote_once(configured) -> None:
    passed = make_run(regressions.PASSED)
    replies: list[Reply] = []
    barrier = threading.Barrier(2)

    def press(user: str) -> None:
        barrier.wait()
        replies.append(ask(f"promote R{passed}", user=user))

    threads = [threading.Thread(target=press, args=(u,)) for u in (PROMOTER, ADMIN)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.template for r in replies) == ["error", "regress_promoting"]
    [loser] = [r for r in replies if r.template == "error"]
    with session_scope() as session:
        winner = regressions.get(session, run_id=passed).promoted_by
    assert message(loser) == (f"R{passed} is being promoted by <@{winner}>: `shop v2` becomes `@production` once its job "
                              "has moved the alias; its card will say so. Nothing more to do.")
    with session_scope() as session:
        assert session.query(jobs.JobRecord).filter_by(task="labmate.regressions.promote").count() == 1


def test_regressions_lists_runs_with_their_verdicts(configured, suites_dir: Path) -> None:
    make_run(regressions.FAILED, reason="pass rate dropped")
    make_run(regressions.PASSED, suite="other")
    reply = ask("regressions shop since:7d")
    assert [(r["label"], r["status"]) for r in reply.context["runs"]] == [("R1", "failed")]
    assert [r["label"] for r in ask("regressions").context["runs"]] == ["R2", "R1"]
    assert message(ask("regressions since:whenever")).startswith("`since:whenever` is not a time I understand.")
    misspelt = ask("regressions shpo")
    assert misspelt.template == "error" and message(misspelt).startswith("There is no suite `shpo` in")
    assert [r["label"] for r in ask("regressions other").context["runs"]] == ["R2"]  # runs kept, its file gone
    (suites_dir / "fresh.yaml").write_text("suite: fresh\nconversations:\n  - id: a\n    turns:\n      - user: hi\n")
    none_yet = ask("regressions fresh")  # a real suite without runs: an empty list
    assert none_yet.template == "regressions_list" and none_yet.context["runs"] == []


def test_a_suite_that_includes_a_file_outside_the_folder_is_refused(configured, suites_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.yaml").write_text("conversations: []\n")
    (suites_dir / "sneaky.yaml").write_text("suite: sneaky\ninclude: ../secret.yaml\nconversations:\n"
                                            "  - id: a\n    turns:\n      - user: hi\n")
    reply = ask("regress sneaky")
    assert message(reply) == "suites/sneaky.yaml:2: included file is outside the suites folder: ../secret.yaml"
    assert stored() == (0, 0)


NOT_A_SUITE = "is not a suite: name one by its `suite:` name, its file name or its path inside `suites/`."


@pytest.mark.parametrize(
    ("text", "expected", "hint"),
    [
        ("regress .", f"`.` {NOT_A_SUITE}", LISTED),
        ("regress ./", f"`./` {NOT_A_SUITE}", LISTED),
        ("regress ''", f"An empty name {NOT_A_SUITE}", LISTED),
        ("regress shop tag:,", "`tag:,` names no tag: write one right after the colon, e.g. `tag:p0` (several: "
         "`tag:p0,p1`).", "e.g. `regress sales-agent candidate:models:/sales-agent@candidate tag:p0`"),
        ("regress shop tag:,,", "`tag:,,` names no tag: write one right after the colon, e.g. `tag:p0` (several: "
         "`tag:p0,p1`).", "e.g. `regress sales-agent candidate:models:/sales-agent@candidate tag:p0`"),
        ("regress shop workers:²", "`workers:²` needs a whole number of workers, e.g. `workers:2`.", ""),
    ],
)
def test_what_is_not_a_suite_or_names_no_tag_is_refused(configured, text: str, expected: str, hint: str) -> None:
    reply = ask(text)
    assert reply.outcome == "user_error"
    assert message(reply) == expected
    assert reply.context["hint"] == hint
    assert stored() == (0, 0)
    assert outcomes() == ["user_error"]


def test_two_suites_of_one_name_are_ambiguous(configured, suites_dir: Path) -> None:
    body = "suite: same\nconversations:\n  - id: a\n    turns:\n      - user: hi\n"
    (suites_dir / "first.yaml").write_text(body)
    (suites_dir / "second.yaml").write_text(body)
    reply = ask("regress same")
    assert reply.outcome == "user_error"
    assert message(reply) == ("`same` is ambiguous: 2 suites are named so (`suites/first.yaml`, `suites/second.yaml`). "
                              "Name the file instead, e.g. `regress first.yaml`.")
    assert stored() == (0, 0)


def test_a_file_name_two_suite_folders_share_is_ambiguous(configured, suites_dir: Path) -> None:
    """The first folder's file won, and the second's could not be named from chat at all."""
    more = suites_dir.parent / "more"
    more.mkdir()
    (configured).write_text(configured.read_text().replace('folders = ["suites"]', 'folders = ["suites", "more"]'))
    reset_settings()
    for folder, name in ((suites_dir, "twin-a"), (more, "twin-b")):
        (folder / "twin.yaml").write_text(f"suite: {name}\nconversations:\n  - id: a\n    turns:\n      - user: hi\n")
    reply = ask("regress twin")
    assert reply.outcome == "user_error"
    assert message(reply) == ("`twin` is a file in 2 suite folders: `suites/twin.yaml` (suite `twin-a`), `more/twin.yaml` "
                              "(suite `twin-b`). Name the suite by its `suite:` name instead (rename one if they share it).")
    assert stored() == (0, 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("suite: laughs\na: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
         "conversations:\n  - id: a\n    turns:\n      - user: hi\n",
         "suites/laughs.yaml:3: YAML aliases are not supported in suites (found *a); write the value out, or share it "
         "with `vars:` or `include:`"),
        ("suite: laughs\nvars:\n  a: &a [lol, lol, lol]\n  b: [*a, *a, *a]\nconversations:\n  - id: a\n    turns:\n"
         "      - user: hi\n", "suites/laughs.yaml:4: YAML aliases are not supported in suites (found *a); write the value "
         "out, or share it with `vars:` or `include:`"),
        ("suite: laughs\noptions: {headers: x}\nconversations:\n  - id: a\n    turns:\n      - user: hi\n",
         "suites/laughs.yaml:2: option 'headers' must map header names to strings, e.g. {Authorization: 'Bearer …'}"),
        ("suite: laughs\noptions:\n  reply_path: [1]\nconversations:\n  - id: a\n    turns:\n      - user: hi\n",
         "suites/laughs.yaml:3: option 'reply_path' must be a JSON path string, e.g. '$.reply'"),
        ("suite: laughs\nconversations:\n  - id: a\n    repeat: 100000000\n    turns:\n      - user: hi\n",
         "suites/laughs.yaml:4: conversation 'a': 'repeat' must be an integer from 1 to 1000"),
        ("suite: laughs\ndescription: " + "x" * (2 * 1024 * 1024) + "\nconversations: []\n",
         "suites/laughs.yaml: the file is larger than 2 MB, the limit for a suite file; split it into files that "
         "`include:` each other"),
    ],
)
def test_a_suite_the_loader_refuses_is_refused_before_anything_is_stored(
        configured, suites_dir: Path, text: str, expected: str) -> None:
    (suites_dir / "laughs.yaml").write_text(text)
    reply = ask("regress laughs")
    assert reply.outcome == "user_error"
    assert message(reply) == expected
    assert reply.context["hint"] == "`labmate regress suites/laughs.yaml` says the same in a terminal."
    assert stored() == (0, 0)
    assert outcomes() == ["user_error"]


def test_a_passed_runs_card_offers_promote_only_when_someone_may_press_it(configured) -> None:
    """On a default install (no promoters, no admins) the card offered Promote and `promote R1`, which
    every person was then refused."""
    from bot.messages.render import render
    from labmate.settings import reset_settings
    from tasks.regressions import cards

    with session_scope() as session:
        run = regressions.get(session, run_id=make_run(regressions.PASSED))
        shown = cards.view(run)
    assert "Promote candidate" in json.dumps(render(cards.TEMPLATE, shown).blocks)
    configured.write_text("")
    reset_settings()
    with session_scope() as session:
        shown = cards.view(regressions.get(session, run_id=run.id))
    rendered = json.dumps(render(cards.TEMPLATE, shown).blocks)
    assert "Promote candidate" not in rendered and "lab:promote" not in rendered
    assert ("Nobody may move `@production` of `shop` to v2 yet: whoever runs labmate names promoters "
            "(`[regress] promoters`) or admins in labmate.toml") in rendered


def test_a_run_whose_baseline_was_the_alias_at_the_candidate_offers_no_promote(configured) -> None:
    """`@production` already pointed at the candidate (it was this run's baseline): the card offered "Promote
    moves `@production` of `shop` to v2", and pressing it logged "Promoted shop v2 to @production"."""
    from bot.messages.render import render
    from tasks.regressions import cards

    run_id = make_run(regressions.PASSED)
    with session_scope() as session:
        run = regressions.get(session, run_id=run_id)
        run.targets = {"candidate": "models:/shop@candidate", "baseline": "models:/shop@production"}
        run.baseline_version = "1"
    with session_scope() as session:
        assert "Promote candidate" in json.dumps(render(cards.TEMPLATE, cards.view(regressions.get(session, run_id=run_id))).blocks)
        regressions.get(session, run_id=run_id).baseline_version = "2"
    with session_scope() as session:
        rendered = json.dumps(render(cards.TEMPLATE, cards.view(regressions.get(session, run_id=run_id))).blocks)
    assert "Promote candidate" not in rendered
    assert "`@production` of `shop` was v2 already when this ran (it was the baseline): nothing to promote." in rendered


def test_a_suite_edited_after_the_command_stops_its_run_with_why(configured, suites_dir: Path) -> None:
    """Each chunk takes its conversations by position from the suite file: edited while the run waited or
    ran (a `git pull` on a worker), half the run was silently dropped and the verdict mixed two versions."""
    from tasks.regressions import work

    assert ask("regress shop").outcome == "ok"
    with session_scope() as session:
        [run] = session.query(regressions.RegressionRun).all()
        session.expunge(run)
    assert run.suite_digest and work.plan_of(run).jobs()  # unchanged: as asked, on the worker's own reading
    suite = suites_dir / "shop.yaml"
    suite.write_text(suite.read_text().replace("conversations:", "conversations:\n  - id: added\n    turns:\n      - user: hi", 1))
    work.start(run.id)
    with session_scope() as session:
        ended = regressions.get(session, run_id=run.id)
        assert ended is not None and ended.status == regressions.ERROR
        assert ended.reason.startswith("`shop` changed after R1 was asked for, so it stopped")


def test_regressions_counts_every_new_failure_and_fix_not_only_those_the_card_shows(configured) -> None:
    run_id = make_run(regressions.FAILED, reason="pass rate dropped")
    shown = [{"key": f"c{i}"} for i in range(5)]
    with session_scope() as session:
        run = regressions.get(session, run_id=run_id)
        assert run is not None
        run.highlights = {"new_failures": shown, "fixes": shown, "failures": [], "more": {"new_failures": 19, "fixes": 1}}
    [listed] = ask("regressions shop").context["runs"]
    assert (listed["new_failures"], listed["fixes"]) == (24, 6)
