"""Only requests signed with the signing secret, within five minutes, get in: the rest are 401s."""

from __future__ import annotations

import time

import pytest
from slackreq import FORM, SIGNING_SECRET, Lab, sign, unique


def _timestamp(offset: int) -> str:
    return str(int(time.time()) + offset)


CASES = {
    "unsigned": lambda body: {"content-type": FORM},
    "no signature": lambda body: {"content-type": FORM, "x-slack-request-timestamp": _timestamp(0)},
    "no timestamp": lambda body: {"content-type": FORM, "x-slack-signature": sign(body, _timestamp(0))},
    "stale (6 minutes)": lambda body: _signed(body, _timestamp(-360)),
    "stale (5 min 5 s)": lambda body: _signed(body, _timestamp(-305)),
    "from the future (6 minutes)": lambda body: _signed(body, _timestamp(360)),
    "malformed timestamp": lambda body: _signed(body, "yesterday"),
    "empty timestamp": lambda body: _signed(body, ""),
    "float timestamp": lambda body: _signed(body, f"{time.time():.3f}"),
    "malformed signature": lambda body: _signed(body, _timestamp(0), signature="v0=not-hex-at-all"),
    "signature of another body": lambda body: _signed(body, _timestamp(0), signature=sign(body + "x", _timestamp(0))),
    "v1 signature": lambda body: _signed(body, _timestamp(0), signature="v1=" + sign(body, _timestamp(0))[3:]),
    "wrong secret": lambda body: _signed(body, _timestamp(0), secret="not-the-secret"),
}


def _signed(body: str, timestamp: str, *, signature: str | None = None, secret: str = SIGNING_SECRET) -> dict[str, str]:
    return {
        "content-type": FORM,
        "x-slack-request-timestamp": timestamp,
        "x-slack-signature": signature if signature is not None else sign(body, timestamp or "0", secret),
    }


@pytest.mark.parametrize("case", list(CASES))
def test_badly_signed_requests_are_401(lab: Lab, case: str) -> None:
    user, channel = unique("U"), unique("C")
    body = lab.slack.command_body("decide ship it #release", user=user, channel=channel)

    response = lab.slack.transport.post(body, CASES[case](body))

    assert response.status == 401, (response.status, response.body)
    lab.drain()
    assert lab.decisions(channel=channel) == []
    assert lab.audit(user=user) == []
    assert [c for c in lab.fake.calls("response_url") if channel in c.body.decode()] == []


def test_a_correctly_signed_request_within_five_minutes_gets_in(lab: Lab) -> None:
    """The control for the cases above: same body, signed as Slack signs it (4 minutes ago)."""
    user, channel = unique("U"), unique("C")
    body = lab.slack.command_body("decide ship it #release", user=user, channel=channel)

    response = lab.slack.transport.post(body, _signed(body, _timestamp(-240)))

    assert response.status == 200
    assert [d.text for d in lab.decisions(channel=channel)] == ["ship it"]


def test_the_signature_is_slacks_v0_hmac() -> None:
    """Independent of slack_sdk: v0=HMAC-SHA256(secret, "v0:{ts}:{body}") in hex."""
    import hashlib
    import hmac

    body, ts = "token=x&text=decide+ship", "1531420618"
    expected = "v0=" + hmac.new(SIGNING_SECRET.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    assert sign(body, ts) == expected
