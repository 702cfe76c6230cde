"""`regress` from the terminal, end to end: the command, the run's row, the jobs on a real (embedded)
Celery worker, the card edited in place, the report logged to MLflow."""

from __future__ import annotations

import json

import pytest

from bot.terminal import run_one
from models import decision, regressions
from models.db import session_scope
from tests.regressions.conftest import ADMIN, PROMOTER


def texts(outcome) -> list[str]:
    return [json.dumps(m.blocks) for m in outcome.messages]


def last_run() -> regressions.RegressionRun:
    with session_scope() as session:
        run = session.query(regressions.RegressionRun).order_by(regressions.RegressionRun.id.desc()).first()
        assert run is not None
        session.expunge(run)
        return run


def test_regress_runs_the_suite_on_workers_and_ends_with_a_verdict(configured, mlflow_uri) -> None:
    outcome = run_one("regress shop", user=ADMIN, channel="C0LAB")
    shown = texts(outcome)
    assert outcome.exit_code == 0, shown
    assert "R1" in shown[0] and "queued" in shown[0]
    run = last_run()
    assert run.status == regressions.PASSED, run.reason
    assert run.done == run.total == 8
    assert run.resolved == {"baseline": "models:/shop/1", "candidate": "models:/shop/2"}
    assert run.counts["candidate"]["passed"] == 3 and run.counts["baseline"]["passed"] == 3
    assert [i["key"] for i in run.highlights["new_failures"]] == ["price"]
    assert [i["key"] for i in run.highlights["fixes"]] == ["refund"]
    final = shown[-1]
    assert "passed" in final and "New failures" in final and "59 USD" in final and "49 USD" in final
    assert "Promote candidate" in final
    assert run.mlflow_run_id
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    logged = client.get_run(run.mlflow_run_id)
    assert logged.data.metrics["candidate.pass_rate"] == 0.75
    assert logged.data.metrics["new_failures"] == 1.0
    assert logged.data.params["suite"] == "shop"
    assert {a.path for a in client.list_artifacts(run.mlflow_run_id)} == {"report.json", "junit.xml", "report.html"}


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("models:/nope@candidate", "`models:/nope@candidate` is not in the model registry: there is no registered model "
         "`nope`."),
        ("models:/shop@staging", "`models:/shop@staging` is not in the model registry: `shop` has no alias `@staging`."),
        ("models:/shop/7", "`models:/shop/7` is not in the model registry: `shop` has no version 7."),
        ("runs:/0123456789abcdef/model", "`runs:/0123456789abcdef/model` names no MLflow run: there is no run "
         "`0123456789abcdef`."),
    ],
)
def test_a_target_missing_from_the_registry_ends_the_run_with_that_message(configured, target: str, expected: str) -> None:
    outcome = run_one(f"regress shop candidate:{target}", user=ADMIN, channel="C0LAB")
    run = last_run()
    assert run.status == regressions.ERROR
    assert run.reason == expected
    final = texts(outcome)[-1]
    assert "could not finish" in final and expected.replace("`", "") in final.replace("`", "")
    assert outcome.exit_code == 1, "the command's outcome is the user's error"


def test_promote_from_the_terminal_moves_the_alias_and_says_so_when_it_had_already_moved(configured, mlflow_uri) -> None:
    from mlflow.tracking import MlflowClient

    assert run_one("regress shop", user=ADMIN, channel="C0LAB").exit_code == 0
    client = MlflowClient(mlflow_uri, mlflow_uri)
    client.set_registered_model_alias("shop", "production", "2")  # someone moved it by hand meanwhile
    outcome = run_one("promote R1", user=PROMOTER, channel="C0LAB")
    shown = texts(outcome)
    assert outcome.exit_code == 0, shown
    assert any("@production of shop already pointed at v2; nothing moved." in t.replace("`", "") for t in shown), shown
    # (the card itself is edited where the run was asked for: another `say`'s terminal, gone by now)
    run = last_run()
    assert run.promoted_by == PROMOTER and run.promotion["already"] is True
    with session_scope() as session:
        [made] = session.query(decision.Decision).all()
        assert sorted((link.kind, link.status) for link in made.links) == [("model", "ok"), ("model", "ok"), ("run", "ok")]
        assert "Promoted shop v2 to @production after regression run R1 of suite shop" in made.text
    assert str(made.id) in client.get_model_version("shop", "2").tags["labmate.decisions"]
    again = run_one("promote R1", user=ADMIN, channel="C0LAB")
    assert "R1 was already promoted by" in texts(again)[0] and again.exit_code == 1


def test_a_target_that_cannot_load_ends_the_run_with_its_error(configured, mlflow_uri, tmp_path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri, mlflow_uri)
    broken = client.create_model_version("shop", str(tmp_path / "no-such-model"))
    client.set_registered_model_alias("shop", "broken", broken.version)
    outcome = run_one("regress shop candidate:models:/shop@broken", user=ADMIN, channel="C0LAB")
    run = last_run()
    assert run.status == regressions.ERROR
    assert run.reason.startswith(f"cannot load target 'models:/shop/{broken.version}': "), run.reason
    assert "Traceback" not in texts(outcome)[-1]


def test_a_database_blip_while_the_report_is_logged_leaves_one_mlflow_run(configured, mlflow_uri, monkeypatch) -> None:
    """The report's MLflow run is made, then its id stored: a database that failed in between made the
    retried report make a second run, and the first stayed RUNNING in `labmate-regressions` for good."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    from models.errors import Unavailable
    from tasks.mlflow_io.regressions import EXPERIMENT

    real, calls = regressions.set_mlflow, []

    def blip(session, **kwargs):
        calls.append(kwargs["mlflow_run_id"])
        if len(calls) == 1:
            raise Unavailable("the knowledge base could not be reached (test)")
        return real(session, **kwargs)

    monkeypatch.setattr(regressions, "set_mlflow", blip)
    run_one("regress shop", user=ADMIN, channel="C0LAB")
    run = last_run()
    assert run.status == regressions.PASSED and len(calls) == 2 and run.mlflow_run_id == calls[1], (run.reason, calls)
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    made = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    active = [(r.info.run_id, r.info.status) for r in made if r.info.lifecycle_stage == "active"]
    assert active == [(run.mlflow_run_id, "FINISHED")]
    assert "could not be logged" not in " ".join(run.highlights["notes"])
