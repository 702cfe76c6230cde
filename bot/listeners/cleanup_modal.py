"""A clean-up proposal's "Choose per run" button: a modal with a choice per run (delete, keep, snooze, or
leave it), whose submission runs the same typed commands the buttons do (`delete <runs>`, `keep <runs>`,
`snooze <runs>`) as the person who submitted it, through dispatch: same access check, audit, jobs."""

from __future__ import annotations

import json
from typing import Any

from slack_bolt import Ack, App
from slack_sdk import WebClient

from bot import dispatch
from bot.listeners.actions import origin_of
from bot.origin import Origin
from bot.replies import left_to_its_job, send_reply
from labmate.errors import NotFoundError
from labmate.settings import Settings

CHOOSE_ACTION = "lab:choose:3"
MODAL_ID = "lab_cleanup_choose"
CHOICES = (("delete", "Delete"), ("keep", "Keep (tag `keep`)"), ("snooze", "Snooze"))
MOST_RUNS = 40


def _pending(label: str, origin: Origin) -> tuple[int, list[dict[str, str]]]:
    """The proposal's runs still waiting for an answer; refused unless `origin` may answer it."""
    from bot.handlers.cleanup import _check
    from models import cleanup as proposals
    from models.db import session_scope

    number = label.strip().lstrip("Pp")
    with session_scope() as session:
        proposal = proposals.get(session, proposal_id=int(number)) if number.isdigit() else None
        if proposal is None:
            raise NotFoundError(f"There is no clean-up proposal {label[:20]}.",
                                hint="`cleanup` lists the proposals waiting for you.")
        _check("choose", proposal, origin)
        runs = [{"run_id": c.run_id, "name": c.run_name or c.run_id[:8], "reason": c.reason}
                for c in proposals.candidates(session, proposal_id=proposal.id) if c.state == proposals.PENDING]
        return proposal.id, runs


def modal(proposal_id: int, runs: list[dict[str, str]], metadata: dict[str, Any]) -> dict[str, Any]:
    options = [{"text": {"type": "plain_text", "text": text}, "value": value} for value, text in CHOICES]
    blocks: list[dict[str, Any]] = [
        {
            "type": "input",
            "block_id": run["run_id"],
            "optional": True,
            "label": {"type": "plain_text", "text": f"{run['name'][:60]} ({run['run_id'][:8]})"},
            "hint": {"type": "plain_text", "text": run["reason"][:150] or "stale"},
            "element": {"type": "static_select", "action_id": "choice", "options": options,
                        "placeholder": {"type": "plain_text", "text": "Leave it for now"}},
        }
        for run in runs[:MOST_RUNS]
    ]
    if not blocks:
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "Every run of this proposal is answered."}}]
    return {
        "type": "modal",
        "callback_id": MODAL_ID,
        "private_metadata": json.dumps({**metadata, "proposal": proposal_id}),
        "title": {"type": "plain_text", "text": f"Clean-up P{proposal_id}"},
        "submit": {"type": "plain_text", "text": "Apply"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks,
    }


def _ack(ack: Ack) -> None:
    ack()


def open_chooser(body: dict[str, Any], action: dict[str, Any], client: WebClient) -> None:
    """One `choose` row: `ok` when the modal opened, refused for someone who may not answer the proposal."""
    origin = origin_of(body, action)
    label = str(action.get("value", ""))
    metadata = {"channel": origin.channel, "ephemeral": origin.ephemeral}  # the Home tab's answer is a DM

    def open_it() -> None:
        proposal_id, runs = _pending(label, origin)
        client.views_open(trigger_id=body["trigger_id"], view=modal(proposal_id, runs, metadata))

    reply = dispatch.open_form(origin, "choose", f"choose {label}", open_it)
    if reply.failed:
        send_reply(origin, reply)


def choices(values: dict[str, Any]) -> dict[str, list[str]]:
    """verb -> the run ids chosen for it, from the submitted state."""
    chosen: dict[str, list[str]] = {}
    for run_id, block in values.items():
        selected = (block.get("choice") or {}).get("selected_option") or {}
        verb = selected.get("value")
        if verb in dict(CHOICES):
            chosen.setdefault(verb, []).append(run_id)
    return chosen


def on_submit(body: dict[str, Any], view: dict[str, Any]) -> None:
    """After the ack (a lazy listener): one command per choice, answered to the submitter alone."""
    metadata = json.loads(view.get("private_metadata") or "{}")
    user = body["user"]["id"]
    for verb, run_ids in choices(view["state"]["values"]).items():
        origin = Origin(user=user, channel=metadata.get("channel", ""), source="slack",
                        ephemeral=bool(metadata.get("ephemeral", True)), idempotency_key=f"view:{view['id']}:{verb}")
        reply = dispatch.handle(f"{verb} {' '.join(run_ids)}", origin)
        if reply.outcome == "duplicate" or left_to_its_job(reply):
            continue  # its job answers, and edits the proposal
        send_reply(origin, reply)


def register(app: App, settings: Settings) -> None:
    app.action(CHOOSE_ACTION)(ack=_ack, lazy=[open_chooser])
    app.view(MODAL_ID)(ack=_ack, lazy=[on_submit])
