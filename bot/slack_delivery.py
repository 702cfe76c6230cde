"""Posting and editing Slack messages exactly once per key.

Retries of a single call are the Slack SDK's (its RateLimitErrorRetryHandler honours Retry-After;
see bot/slack_client.py). What this module adds is what the SDK can't know:
- which Slack errors are worth retrying later (they raise TransientDeliveryError, and the job's
  Celery retry comes back with backoff) and which are final (PermanentDeliveryError);
- the delivery ledger (models.deliveries): a key is posted once; a known key is edited in place
  (chat.update), throttled unless the state is final;
- a post whose answer never came (the worker died, Slack timed out or said 500) is looked up in
  the channel by the message metadata carrying its key before it is posted again;
- two jobs delivering one key at once (a card's first post) post it once: a post another process
  has in flight right now is waited for (final) or left to it (intermediate), not made twice;
- a card whose final state was delivered is never edited back to an intermediate one (a late
  progress update can't overwrite the result, and a rate-limited one is dropped, not sent after
  Slack's Retry-After, when the final state may be there).
"""

from __future__ import annotations

import logging
import socket
import time
import urllib.error
from functools import cached_property
from pathlib import Path
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from bot.messages.limits import fit_blocks
from bot.messages.mrkdwn import channel as channel_mention
from bot.messages.render import Message
from labmate.outbox import PermanentDeliveryError, TransientDeliveryError

log = logging.getLogger(__name__)

FALLBACK_ERRORS = ("not_in_channel", "channel_not_found", "is_archived")
PRIVATE_FALLBACK_ERRORS = (*FALLBACK_ERRORS, "user_not_in_channel")
TRANSIENT_ERRORS = ("ratelimited", "service_unavailable", "internal_error", "fatal_error", "request_timeout")
EDIT_AGAIN_ERRORS = ("message_not_found", "cant_update_message", "edit_window_closed")
METADATA_EVENT = "labmate_reply"
EDIT_INTERVAL_S = 2.0
"""The least time between two edits of one message that aren't final (chat.update is rate limited)."""
LOOKBACK_S = 120
NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    urllib.error.URLError,
    ConnectionError,
    TimeoutError,
    socket.timeout,
    OSError,
)


def classify(exc: BaseException, what: str) -> Exception:
    """A Slack or network error -> TransientDeliveryError (try later) or PermanentDeliveryError."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = getattr(response, "status_code", 200) if response is not None else 0
        error = str(response.get("error", "")) if response is not None else ""
        if status == 429 or error == "ratelimited":
            headers = getattr(response, "headers", {}) or {}
            retry_after = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
            value = retry_after[0] if isinstance(retry_after, list) else retry_after
            return TransientDeliveryError(f"Slack rate-limited {what}", retry_after=float(value or 1))
        if status >= 500 or error in TRANSIENT_ERRORS:
            return TransientDeliveryError(f"Slack answered {status} {error or ''} to {what}".strip())
        return PermanentDeliveryError(f"Slack refused {what}: {error or status}")
    if isinstance(exc, NETWORK_ERRORS):
        return TransientDeliveryError(f"Slack did not answer {what}: {type(exc).__name__}: {exc}")
    return PermanentDeliveryError(f"{what} failed: {type(exc).__name__}: {exc}")


def _metadata(key: str, digest: str) -> dict[str, Any]:
    return {"event_type": METADATA_EVENT, "event_payload": {"key": key, "digest": digest}}


class SlackPoster:
    def __init__(self, client: WebClient) -> None:
        self.client = client

    @cached_property
    def progress_client(self) -> WebClient:
        from bot.slack_client import progress_editor

        return progress_editor(self.client)

    def _in_flight_s(self) -> float:
        """How long a post may be under way in another process (one call, its timeout, one retry)."""
        timeout = self.client.timeout if isinstance(self.client.timeout, int | float) else 10
        return 2 * float(timeout) + 1

    # -- the public entry ------------------------------------------------------------------

    def deliver(
        self, reply_to: dict[str, Any], message: Message, *, key: str | None, final: bool, digest: str
    ) -> str | None:
        if reply_to.get("ephemeral"):
            return self._ephemeral(reply_to, message, key, digest)
        if key is None:
            return self._post(reply_to, message, None, digest)
        from models import deliveries as ledger
        from models.db import session_scope

        with session_scope() as session:
            record = ledger.get(session, key=key)
            known = None if record is None else (record.state, record.channel, record.ts, record.digest,
                                                  record.updated_at, record.created_at, record.files_done)
            ended = record is not None and bool((record.detail or {}).get(ledger.FINAL))
            detail = (record.detail or {}) if record is not None else {}
            in_flight = bool(detail.get(ledger.IN_FLIGHT, True)) and detail.get(ledger.POSTER) != _job_id()
        if ended and not final:
            return known[2] if known else None  # the card already shows its final state
        if known is None:
            with session_scope() as session:
                started = ledger.start(
                    session, key=key, channel=reply_to["channel"], thread_ts=reply_to.get("thread_ts"), digest=digest,
                    by=_job_id(),
                )
            if started:
                ts = self._post_recorded(reply_to, message, key, digest, files_done=0)
                if final:
                    self._post_final(key)
                return ts
            return self.deliver(reply_to, message, key=key, final=final, digest=digest)  # another process raced us
        state, channel, ts, posted_digest, updated_at, created_at, files_done = known
        if state == ledger.POSTED:
            if ts and posted_digest != digest:
                self._edit(key, channel, ts, message, digest, final, updated_at)
            elif not ts and final and posted_digest != digest and (reply_to.get("response_url") or reply_to.get("user")):
                # Said privately (the bot isn't in the channel): no message to edit, so its end goes the same
                # way; the steps between are not sent (a response_url takes five messages).
                self._to_the_person(reply_to, message)
                with session_scope() as session:
                    ledger.posted(session, key=key, ts=None, digest=digest)
            if files_done < len(message.files):
                self._upload(key, reply_to, message, thread_ts=reply_to.get("thread_ts") or ts, start=files_done)
            if final and not ended:
                with session_scope() as session:
                    ledger.mark_final(session, key=key)
            return ts
        if state == ledger.POSTING and in_flight and _age_s(created_at) < self._in_flight_s():
            if not final:
                return None  # another job is posting this message now; a later update follows
            raise TransientDeliveryError(f"reply {key} is being posted by another job; trying again shortly", retry_after=1)
        found = self._find_posted(channel, reply_to.get("thread_ts"), key, since=created_at)
        if found is not None:
            found_ts, found_digest = found
            log.info("reply %s was posted before its worker heard back (ts %s); not posting it again", key, found_ts)
            with session_scope() as session:
                ledger.posted(session, key=key, ts=found_ts, digest=found_digest)
            return self.deliver(reply_to, message, key=key, final=final, digest=digest)
        with session_scope() as session:
            ledger.not_in_flight(session, key=key, value=True)  # an attempt is under way again: others wait for it
        ts = self._post_recorded(reply_to, message, key, digest, files_done=files_done)
        if final:
            self._post_final(key)
        return ts

    def publish_home(self, user: str, message: Message) -> str | None:
        """A user's Home tab (views.publish): the whole view replaced, so publishing twice is harmless."""
        view = {"type": "home", "blocks": message.blocks[:100]}
        try:
            published = self.client.views_publish(user_id=user, view=view)
        except Exception as exc:
            raise classify(exc, "views.publish") from exc
        return str((published.get("view") or {}).get("id") or "") or None

    # -- posting ---------------------------------------------------------------------------

    def _post_recorded(self, reply_to: dict[str, Any], message: Message, key: str, digest: str, *, files_done: int) -> str | None:
        from models import deliveries as ledger
        from models.db import session_scope

        answered: dict[str, Any] = {}
        try:
            ts = self._post(reply_to, message, key, digest, upload=False, answered=answered)
        except PermanentDeliveryError as exc:
            with session_scope() as session:
                ledger.failed(session, key=key, error=str(exc))
            raise
        except TransientDeliveryError:
            with session_scope() as session:  # nobody is posting it now; the retry looks, then posts
                ledger.not_in_flight(session, key=key)
            raise
        with session_scope() as session:
            # a DM posted to a user id lives in the channel Slack answers with (D…): edits go there
            ledger.posted(session, key=key, ts=ts, digest=digest, channel=answered.get("channel"))
        self._upload(key, reply_to, message, thread_ts=reply_to.get("thread_ts") or ts, start=files_done)
        return ts

    def _post_final(self, key: str) -> None:
        from models import deliveries as ledger
        from models.db import session_scope

        with session_scope() as session:
            ledger.mark_final(session, key=key)

    def _post(
        self, reply_to: dict[str, Any], message: Message, key: str | None, digest: str, *, upload: bool = True,
        answered: dict[str, Any] | None = None,
    ) -> str | None:
        kwargs: dict[str, Any] = {"channel": reply_to["channel"], "text": message.text, "blocks": message.blocks}
        if reply_to.get("thread_ts"):
            kwargs["thread_ts"] = reply_to["thread_ts"]
        if key is not None:
            kwargs["metadata"] = _metadata(key, digest)
        try:
            posted = self.client.chat_postMessage(**kwargs)
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            if error in FALLBACK_ERRORS and (reply_to.get("response_url") or reply_to.get("user")):
                # the bot can't post there (not a member; or, for an event's answer, which has no response_url,
                # the channel was archived or restricted since): the person still hears back
                self._to_the_person(reply_to, message)
                return None
            raise classify(exc, "chat.postMessage") from exc
        except Exception as exc:
            raise classify(exc, "chat.postMessage") from exc
        ts = posted.get("ts")
        if answered is not None and posted.get("channel"):
            answered["channel"] = posted.get("channel")
        if upload:
            self._upload(None, reply_to, message, thread_ts=reply_to.get("thread_ts") or ts, start=0)
        return str(ts) if ts else None

    def _ephemeral(self, reply_to: dict[str, Any], message: Message, key: str | None, digest: str) -> None:
        """A message for one person: through the interaction's response_url, else chat.postEphemeral.
        Slack keeps no trace of it to look up, so a retry after a lost answer may show it twice."""
        from models import deliveries as ledger
        from models.db import session_scope

        if key is not None:
            with session_scope() as session:
                record = ledger.get(session, key=key)
                if record is not None and record.state == ledger.POSTED:
                    return None
                if record is None:
                    ledger.start(session, key=key, channel=reply_to["channel"], thread_ts=None, digest=digest)
        self._to_the_person(reply_to, message)
        if key is not None:
            with session_scope() as session:
                ledger.posted(session, key=key, ts=None, digest=digest)
        return None

    def _to_the_person(self, reply_to: dict[str, Any], message: Message) -> None:
        """Privately: through the interaction's response_url when it has one, else `_privately`."""
        if reply_to.get("response_url"):
            self._respond(reply_to["response_url"], message, reply_to=reply_to)
        else:
            self._privately(reply_to, message)

    def _respond(self, response_url: str, message: Message, *, reply_to: dict[str, Any]) -> None:
        """Answer the person privately through the command's response_url. Slack takes one for 30
        minutes and five messages, and an answer can come later than that (a long job, or one that
        waited out a Slack outage): a response_url Slack no longer takes (404) falls back to
        `_privately`."""
        try:
            response = WebhookClient(response_url).send(
                text=message.text, blocks=message.blocks, response_type="ephemeral", replace_original=False
            )
        except Exception as exc:
            raise classify(exc, "the response_url") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientDeliveryError(f"Slack answered {response.status_code} to the response_url")
        if response.status_code == 404 and reply_to.get("user"):
            log.info("the response_url is no longer taken (%s); answering privately another way", response.body)
            self._privately(reply_to, message)
            return
        if response.status_code >= 400:
            raise PermanentDeliveryError(f"Slack refused the response_url: {response.status_code} {response.body}")

    def _privately(self, reply_to: dict[str, Any], message: Message) -> None:
        """An ephemeral message in the channel; where the bot can't post one there (not a member, or
        the person left), a direct message from the bot that says which channel it answers."""
        try:
            self.client.chat_postEphemeral(
                channel=reply_to["channel"], user=reply_to["user"], text=message.text, blocks=message.blocks
            )
            return
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else None
            if error not in PRIVATE_FALLBACK_ERRORS:
                raise classify(exc, "chat.postEphemeral") from exc
        except Exception as exc:
            raise classify(exc, "chat.postEphemeral") from exc
        where = f"Your answer from {channel_mention(reply_to['channel'])}:"
        context = {"type": "context", "elements": [{"type": "mrkdwn", "text": where}]}
        blocks = fit_blocks([context, *message.blocks]) if message.blocks else None  # else the text shows
        try:
            self.client.chat_postMessage(channel=reply_to["user"], text=f"{where}\n{message.text}", blocks=blocks)
        except Exception as exc:
            raise classify(exc, "chat.postMessage to the person") from exc

    def _edit(
        self, key: str, channel: str, ts: str, message: Message, digest: str, final: bool, updated_at: Any
    ) -> None:
        from models import deliveries as ledger
        from models.db import session_scope

        if not final and updated_at is not None and _age_s(updated_at) < EDIT_INTERVAL_S:
            return  # a newer state follows; the final one is never skipped
        try:
            (self.client if final else self.progress_client).chat_update(
                channel=channel, ts=ts, text=message.text, blocks=message.blocks, metadata=_metadata(key, digest)
            )
        except SlackApiError as exc:
            if not final and exc.response is not None and exc.response.status_code == 429:
                log.info("Slack rate-limited an intermediate state of %s; a newer one follows", key)
                return
            if exc.response is not None and exc.response.get("error") in EDIT_AGAIN_ERRORS:
                log.warning("message %s can't be edited (%s); posting it anew", key, exc.response.get("error"))
                new_ts = self._post({"channel": channel}, message, key, digest, upload=False)
                with session_scope() as session:
                    ledger.posted(session, key=key, ts=new_ts, digest=digest)
                return
            raise classify(exc, "chat.update") from exc
        except Exception as exc:
            raise classify(exc, "chat.update") from exc
        with session_scope() as session:
            ledger.edited(session, key=key, digest=digest)

    def _upload(self, key: str | None, reply_to: dict[str, Any], message: Message, *, thread_ts: str | None, start: int) -> None:
        """Charts go in the thread of the answer they belong to (a slash command has no thread of its own)."""
        from models import deliveries as ledger
        from models.db import session_scope

        for index, item in enumerate(message.files[start:], start=start):
            path = Path(item["path"])
            if not path.is_file():
                log.warning("chart %s is gone (another worker made it?); not uploaded", path)
                continue
            try:
                self.client.files_upload_v2(
                    channel=reply_to["channel"],
                    thread_ts=thread_ts,
                    file=str(path),
                    filename=path.name,
                    title=item.get("title", path.name),
                )
            except Exception as exc:
                raise classify(exc, "files.upload") from exc
            if key is not None:
                with session_scope() as session:
                    ledger.files_done(session, key=key, count=index + 1)

    # -- finding a post whose answer was lost ------------------------------------------------

    def _find_posted(self, channel: str, thread_ts: str | None, key: str, *, since: Any) -> tuple[str, str] | None:
        """(ts, digest) of the message carrying `key` in its metadata, if Slack has it."""
        oldest = f"{max(0.0, _epoch(since) - LOOKBACK_S):.6f}"
        try:
            if thread_ts:
                page = self.client.conversations_replies(
                    channel=channel, ts=thread_ts, oldest=oldest, include_all_metadata=True, limit=200
                )
            else:
                page = self.client.conversations_history(
                    channel=channel, oldest=oldest, include_all_metadata=True, limit=200
                )
        except SlackApiError as exc:
            error = exc.response.get("error") if exc.response is not None else ""
            log.warning("could not look for reply %s in %s (%s); posting it", key, channel, error)
            return None
        except Exception as exc:
            raise classify(exc, "conversations.history") from exc
        for item in page.get("messages", []):
            payload = (item.get("metadata") or {}).get("event_payload") or {}
            if payload.get("key") == key:
                return str(item["ts"]), str(payload.get("digest", ""))
        return None


def _job_id() -> str | None:
    """The Celery job delivering in this thread, if any: a post left in flight by this same job (its
    worker died) is taken over at once; one another job has in flight is waited for."""
    from celery import current_task

    request = getattr(current_task, "request", None) if current_task else None
    return str(request.id) if request is not None and getattr(request, "id", None) else None


def _epoch(value: Any) -> float:
    from datetime import UTC

    if value is None:
        return time.time()
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return float(aware.timestamp())


def _age_s(value: Any) -> float:
    return time.time() - _epoch(value)
