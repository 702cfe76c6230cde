"""Which Slack failures the SDK repeats inside one call: only requests Slack cannot have acted on."""

from __future__ import annotations

from urllib.error import URLError

import pytest

from bot.slack_client import RefusedConnectionRetryHandler


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (URLError(ConnectionRefusedError()), True),
        (URLError(TimeoutError("timed out")), True),  # connecting or sending timed out
        (TimeoutError("timed out"), False),  # waiting for the answer: Slack may have posted
        (URLError(ConnectionResetError()), False),
        (ConnectionResetError(), False),
    ],
)
def test_only_requests_that_never_reached_slack_are_repeated(error: Exception, retried: bool) -> None:
    assert RefusedConnectionRetryHandler()._can_retry(error=error) is retried
