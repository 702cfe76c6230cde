from __future__ import annotations

from typing import Any, Literal

from msgspec import Struct

Source = Literal["slack", "shell"]
EVENT_KEY = "evt:"
"""The idempotency keys of Slack events: the one kind of request Slack sends again on its own."""


class Origin(Struct, frozen=True):
    """Who asked, where, and where the answers go. Plain values: it travels to jobs as `reply_to`."""

    user: str
    channel: str = ""
    source: Source = "shell"
    thread_ts: str | None = None
    response_url: str | None = None
    idempotency_key: str | None = None
    session: str = ""
    user_groups: tuple[str, ...] = ()
    actor: str | None = None
    """Who really typed it, when the command runs as someone else (the terminal's `--user`)."""
    ephemeral: bool = False
    """Answers are for this person only (a button's): Slack shows them to nobody else."""
    channel_name: str = ""
    """The channel's name as a slash command gives it: a watch may have been set up as `#name`."""

    @property
    def resent_by_slack(self) -> bool:
        """Slack re-sends an event it thinks went unanswered; a command, button or form it never re-sends,
        so the same one again is the person trying again."""
        return (self.idempotency_key or "").startswith(EVENT_KEY)

    def reply_to(self) -> dict[str, Any]:
        return {
            "user": self.user,
            "channel": self.channel,
            "source": self.source,
            "thread_ts": self.thread_ts,
            "response_url": self.response_url,
            "session": self.session,
            **({"ephemeral": True} if self.ephemeral else {}),
        }


class JobRequest(Struct):
    name: str
    kwargs: dict[str, Any]
    what: str = ""
    key: str | None = None
    """The job's id, when the handler must know it before the commit (a launch records its task id to
    revoke it); otherwise derived from the request's idempotency key."""


class Reply(Struct):
    """What a command answers at once: a template and its context, plus the jobs it started."""

    template: str
    context: dict[str, Any]
    outcome: str = "ok"
    public: bool = False
    jobs: list[JobRequest] = []
    error_id: str | None = None
    verb: str = ""
    task_ids: list[str] = []
    cache_key: str | None = None
    """Set when the rendered message depends on nothing but this key (help): rendered once."""
    notes: list[str] = []
    """What the answer must also say (a follow-up job is delayed): shown under the message."""
    post_here: bool = False
    """Posted by this process, not handed to a worker: a worker's delivery keeps its ledger in the
    knowledge base, and this answer says the knowledge base can't be reached."""

    @property
    def failed(self) -> bool:
        return self.outcome in ("user_error", "refused", "error")
