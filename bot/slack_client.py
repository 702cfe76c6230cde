"""The Slack Web API client: base URL and timeout from settings, and the SDK's own retry handlers.

Retried inside one call, by the SDK: a 429 (after its Retry-After, twice) and a connection that
was refused or timed out while connecting or sending (the request never reached Slack whole). Not retried here: a 5xx, a reset connection or a
timeout, because Slack may have acted on the request; the delivery (bot/slack_delivery.py) retries
those through the job's Celery retry, after checking whether the message was posted after all.
"""

from __future__ import annotations

from http.client import RemoteDisconnected
from typing import Any
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from labmate.settings import Settings


class RefusedConnectionRetryHandler(ConnectionErrorRetryHandler):
    """The SDK's connection-error handler, for requests Slack never got (safe to repeat, even a post).

    urllib wraps in URLError only what fails while connecting or sending; a timeout waiting for the
    answer comes as a bare TimeoutError and is not retried here."""

    def _can_retry(self, *, error: Exception | None = None, **kwargs: Any) -> bool:
        return isinstance(error, URLError) and isinstance(error.reason, (ConnectionRefusedError, TimeoutError))


def retry_handlers() -> list[Any]:
    return [RefusedConnectionRetryHandler(max_retry_count=2), RateLimitErrorRetryHandler(max_retry_count=2)]


def read_retry_handlers() -> list[Any]:
    """For reads (history, permalinks): repeating one is harmless, so timeouts and resets are retried too."""
    errors: list[type[Exception]] = [URLError, ConnectionResetError, RemoteDisconnected, TimeoutError]
    return [
        ConnectionErrorRetryHandler(max_retry_count=3, error_types=errors),
        RateLimitErrorRetryHandler(max_retry_count=2),
    ]


def progress_editor(client: WebClient) -> WebClient:
    """The same Slack, for a card's intermediate states: a 429 is not waited out. The SDK would send
    the old state after its Retry-After, when the card may already show its final one; a newer state
    follows anyway."""
    return WebClient(token=client.token, base_url=client.base_url, timeout=client.timeout,
                     retry_handlers=[RefusedConnectionRetryHandler(max_retry_count=2)])


def reader(client: WebClient) -> WebClient:
    """The same Slack, for calls that only read: retried on timeouts as well as refusals."""
    return WebClient(
        token=client.token, base_url=client.base_url, timeout=client.timeout, retry_handlers=read_retry_handlers()
    )


def web_client(settings: Settings) -> WebClient:
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else None
    return WebClient(
        token=token,
        base_url=settings.slack_api_url,
        timeout=settings.slack_timeout,  # type: ignore[arg-type]  (urllib takes seconds as a float)
        retry_handlers=retry_handlers(),
    )


WHERE = {
    "SLACK_BOT_TOKEN": "the Bot User OAuth Token (OAuth & Permissions)",
    "SLACK_SIGNING_SECRET": "the Signing Secret (Basic Information)",
    "SLACK_APP_TOKEN": "an App-Level Token with connections:write (Basic Information → App-Level Tokens)",
}


def missing_credentials(settings: Settings, *, socket_mode: bool = False) -> str:
    """What's missing to talk to Slack, all of it in one line with where to get each; "" when nothing
    is. Over HTTP each request is signed (the signing secret); Socket Mode connects with the app token."""
    needed = (("SLACK_BOT_TOKEN", settings.slack_bot_token),
              ("SLACK_APP_TOKEN", settings.slack_app_token) if socket_mode
              else ("SLACK_SIGNING_SECRET", settings.slack_signing_secret))  # fmt: skip
    missing = [name for name, value in needed if not value or not value.get_secret_value()]
    if not missing:
        return ""
    command = "labmate serve --socket-mode" if socket_mode else "labmate serve"
    return (
        f"{command} needs {' and '.join(missing)} in the environment: create the Slack app from "
        f"slack/manifest.yml, install it, then copy {' and '.join(WHERE[name] for name in missing)}. "
        "Without Slack, use `labmate shell`."
    )
