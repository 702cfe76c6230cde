"""The Bolt app, built in one place. Listeners only parse, ack and hand over to dispatch.

`process_before_response=True`: a slash command is answered in the HTTP response itself
(the answer or "working on it"), and events, shortcuts and reactions ack at once and do
their Slack API calls in lazy listeners, so nothing depends on Bolt's background ack thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

from slack_bolt import App, BoltRequest
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.middleware.request_verification import RequestVerification
from slack_bolt.response import BoltResponse

from bot.listeners import actions, cleanup_modal, commands, events, shortcuts, views
from bot.messages.render import render
from bot.slack_client import missing_credentials, web_client
from labmate.errors import LabmateError, new_error_id
from labmate.settings import Settings, get_settings

log = logging.getLogger(__name__)


class MissingSlackSettings(LabmateError):
    pass


class StrictRequestVerification(RequestVerification):
    """Bolt's signature check, but a non-numeric timestamp is a 401 too (Bolt raises ValueError,
    which would reach the error handler: a 200, and a reply to the unverified response_url)."""

    def process(self, *, req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]) -> BoltResponse:
        timestamp = req.headers.get("x-slack-request-timestamp", ["0"])[0]
        try:
            int(timestamp)
        except (TypeError, ValueError):
            if not self._can_skip(req.mode, req.body):
                return self._build_error_response()
        return super().process(req=req, resp=resp, next=next)


def _slack_logger() -> logging.Logger:
    logger = logging.getLogger("labmate.slack")
    logger.addFilter(_not_bolts_token_notice)  # once: the same function is not added twice
    return logger


def _not_bolts_token_notice(record: logging.LogRecord) -> bool:
    """Bolt reads SLACK_BOT_TOKEN from the environment even when given a client made from it, and
    warns at every start that the token "will be unused"; it is the client's token, so say nothing."""
    return record.getMessage() != warning_client_prioritized_and_token_skipped()


def build_app(
    settings: Settings | None = None,
    *,
    token_verification: bool = True,
    socket_mode: bool = False,
    listener_executor: Executor | None = None,
) -> App:
    """Over HTTP every request's signature is checked; in Socket Mode requests come over the app's
    own authenticated connection, and no signing secret is needed. `listener_executor` runs the lazy
    listeners (Bolt makes its own if not given): Socket Mode waits for it when stopped."""
    settings = settings or get_settings()
    missing = missing_credentials(settings, socket_mode=socket_mode)
    if missing:
        raise MissingSlackSettings(missing)
    signing_secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
    app = App(
        # Bolt names its logger after the app (not "labmate": that is our package's logger) and would
        # otherwise take the caller's file name from inspect.stack(), ~15 ms of every start.
        name="labmate-slack",
        client=web_client(settings),
        signing_secret=signing_secret,
        # Same place in the middleware chain as Bolt's own check (first, before authorize).
        request_verification_enabled=False,
        before_authorize=None if socket_mode else StrictRequestVerification(signing_secret),
        process_before_response=True,
        token_verification_enabled=token_verification,
        logger=_slack_logger(),
        listener_executor=listener_executor,
    )
    commands.register(app, settings)
    events.register(app, settings)
    shortcuts.register(app, settings)
    views.register(app, settings)
    cleanup_modal.register(app, settings)
    actions.register(app, settings)

    @app.error
    def on_error(error: Exception, body: dict[str, Any], respond: Any, logger: logging.Logger) -> BoltResponse:
        error_id = new_error_id()
        logger.error("unhandled error [%s]", error_id, exc_info=error)
        message = render(
            "error",
            {"message": "Something went wrong on my side, so this was not done.", "hint": "", "error_id": error_id},
        )
        if body.get("response_url"):
            try:
                respond(text=message.text, blocks=message.blocks, response_type="ephemeral", replace_original=False)
            except Exception:
                logger.exception("could not tell the user about [%s]", error_id)
        if body.get("type") == "event_callback":
            # Nobody can be told about an event that failed before it was acked; a 500 makes Slack
            # send it again (three times, with backoff), and the handlers are idempotent per event.
            return BoltResponse(status=500, body="")
        return BoltResponse(status=200, body="")

    return app
