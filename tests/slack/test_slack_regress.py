"""A regression run from Slack: the slash command, one card posted and edited in the channel (queued,
running, verdict), the Promote button (a typed `promote` run as the clicker: refused without the right,
promotes once), and a Slack retry that starts one run. In process, against the fake Slack, with the real
embedded worker and a real MLflow store with a registered model."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fakeslack import iter_texts
from slackreq import FORM, Lab, poll, unique

from tests.regressions.conftest import ADMIN, PROMOTER, SHOP_SUITE, shop_store, write_toml  # noqa: F401

pytestmark = [pytest.mark.slow]


@pytest.fixture
def regressing(inprocess: Lab, lab_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
               shop_store: Path) -> Lab:  # noqa: F811
    from labmate.settings import reset_settings

    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "shop.yaml").write_text(textwrap.dedent(SHOP_SUITE).lstrip())
    write_toml(Path(os.environ["LABMATE_CONFIG"]))
    (lab_home / "mlflow").mkdir(parents=True, exist_ok=True)
    shutil.copy(shop_store / "mlflow.db", lab_home / "mlflow" / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{lab_home / 'mlflow' / 'mlflow.db'}")
    reset_settings()
    return inprocess


def shown(params: dict[str, Any]) -> str:
    return "\n".join([params.get("text", ""), *iter_texts(params.get("blocks", []))])


def card_calls(lab: Lab, channel: str, method: str, key: str = "regress:1") -> list[Any]:
    return [
        c for c in lab.fake.calls(method)
        if c.params.get("channel") == channel and (c.params.get("metadata") or {}).get("event_payload", {}).get("key") == key
    ]


def card_says(lab: Lab, channel: str, text: str) -> bool:
    return any(text in shown(c.params) for m in ("chat.postMessage", "chat.update") for c in card_calls(lab, channel, m))


def press(lab: Lab, user: str, channel: str, ts: str) -> Any:
    return lab.slack.block_action(action_id="lab:promote:0", value="R1", user=user, channel=channel,
                                  message={"type": "message", "ts": ts, "text": "card", "user": "UBOT"})


def test_one_card_goes_from_queued_to_the_verdict_and_promote_moves_the_alias_once(regressing: Lab) -> None:
    lab, channel = regressing, unique("C")
    data = lab.slack.command("regress shop", user="U0ALICE", channel=channel).json()
    assert "*R1* queued: suite `shop`" in shown(data)
    poll(lambda: card_says(lab, channel, ": *passed*"), timeout=120, what="the card's verdict")
    posts = card_calls(lab, channel, "chat.postMessage")
    assert len(posts) == 1, "one message per run"
    ts = posts[0].response["ts"]
    assert ": *queued*" in shown(posts[0].params) or ": *running*" in shown(posts[0].params)
    assert {c.params["ts"] for c in card_calls(lab, channel, "chat.update")} <= {ts}
    final = next(c for m in ("chat.update", "chat.postMessage") for c in card_calls(lab, channel, m)
                 if ": *passed*" in shown(c.params))
    text = shown(final.params)
    assert "*New failures* (1):" in text and "`price`" in text and "59 USD" in text and "49 USD" in text
    assert "*Fixes* (1):" in text and "`refund`" in text
    assert "candidate `models:/shop@candidate` (`models:/shop/2`): *3/4* passed (75%)" in text
    [button] = [e for b in final.params["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert (button["action_id"], button["value"], button["text"]["text"]) == ("lab:promote:0", "R1", "Promote candidate")

    assert press(lab, "U0MALLORY", channel, ts).status == 200
    lab.fake.wait_for("response_url", where=lambda c: "You can't promote R1" in json.dumps(c.params))
    assert press(lab, PROMOTER, channel, ts).status == 200
    poll(lambda: card_says(lab, channel, "Promoted by <@UPROMOTER>"), timeout=60, what="the card to say promoted")
    assert press(lab, ADMIN, channel, ts).status == 200
    lab.fake.wait_for("response_url", where=lambda c: "R1 was already promoted by" in json.dumps(c.params))

    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"], os.environ["MLFLOW_TRACKING_URI"])
    assert str(client.get_registered_model("shop").aliases["production"]) == "2"
    [decision] = lab.decisions()
    assert decision.author == PROMOTER and "Promoted shop v2 to @production" in decision.text
    assert sorted(link.kind for link in decision.links) == ["model", "model", "run"]
    outcomes = [(e.user, e.outcome) for e in lab.audit(verb="promote")]
    assert ("U0MALLORY", "refused") in outcomes and (ADMIN, "user_error") in outcomes


def test_a_slack_retry_of_the_same_command_starts_one_run(regressing: Lab) -> None:
    lab, channel = regressing, unique("C")
    body = lab.slack.command_body("regress shop tag:p0", user="U0ALICE", channel=channel)
    first, again = lab.slack.send(body, FORM), lab.slack.send(body, FORM)
    assert "*R1* queued" in first.body and again.body == ""
    poll(lambda: card_says(lab, channel, ": *failed*"), timeout=120, what="the card's verdict")
    from models import regressions
    from models.db import session_scope

    with session_scope(lab.db_url) as session:
        assert [(r.id, r.total) for r in session.query(regressions.RegressionRun).all()] == [(1, 2)]
