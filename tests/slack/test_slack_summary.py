"""`/lab summary` from Slack: acked at once, answered by a real job, chart uploaded to the answer's thread."""

from __future__ import annotations

import pytest
from fakeslack import FakeSlack, iter_texts
from slackreq import InProcess, Slack, unique

from labmate.settings import reset_settings
from tests.experiments.conftest import Store, add_run


@pytest.fixture
def experiment(lab_home, monkeypatch: pytest.MonkeyPatch) -> Store:
    from mlflow import MlflowClient

    root = lab_home / "mlflow"
    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    reset_settings()
    store = Store(uri, root, MlflowClient(tracking_uri=uri))
    store.experiment_id = store.client.create_experiment("sales-agent", artifact_location=str(root / "artifacts"))
    add_run(store, "baseline", user="dana", params={"alpha": 0.001}, f1s=[0.6, 0.7], start_hour=0)
    add_run(store, "unigram-v2", user="sam", params={"alpha": 0.0001}, f1s=[0.7, 0.86], start_hour=2)
    return store


def test_summary_is_acked_then_posted_with_its_chart_in_thread(experiment: Store, bolt_app, slack_env: FakeSlack) -> None:
    channel, user = unique("C"), unique("U")
    from labmate.settings import get_settings

    slack = Slack(InProcess(bolt_app), get_settings().database_url, response_base=slack_env.base_url + "response/")
    response = slack.command("summary sales-agent val_f1", user=user, channel=channel)
    assert response.status == 200
    ack = response.json()
    assert ack["response_type"] == "ephemeral" and "Working on it" in ack["text"]

    [posted] = slack_env.wait_for("chat.postMessage", where=lambda c: c.params["channel"] == channel, timeout=60)
    shown = "\n".join(iter_texts(posted.params["blocks"]))
    assert "unigram-v2" in shown and "baseline" in shown
    slack_env.wait_for("files.completeUploadExternal", timeout=30)
    [upload] = [u for u in slack_env.uploads() if u.get("completed")]
    assert upload["filename"].endswith(".png") and upload["length"] > 1000
    assert upload["channel"] == channel
    assert upload["thread_ts"] == posted.response["ts"], "the chart belongs in the summary's thread"
