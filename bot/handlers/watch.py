"""watch and unwatch: which experiments a channel follows.

`watch <experiment>` is answered by a job (`labmate.watch.add`): only a worker may ask MLflow whether
the experiment exists (and suggest the closest names when it doesn't). `watch` alone and `unwatch`
only read and write the knowledge base, here.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from bot import access
from bot.grammar.watch import UnwatchArgs, WatchArgs
from bot.messages import mrkdwn
from bot.origin import JobRequest, Origin, Reply
from labmate.errors import AccessDenied, NotFoundError
from labmate.settings import get_settings
from models import watch as watches

ADD_TASK = "labmate.watch.add"


def _channel(origin: Origin, asked: str | None) -> str:
    return asked or origin.channel


def _here(origin: Origin) -> tuple[str, ...]:
    """This channel as a watch may name it: its id, or `#name` (with the manifest's should_escape off,
    Slack sends a channel typed in a command by its name, and labmate posts to it by that name)."""
    if origin.source == "slack" and origin.channel_name:
        return origin.channel, f"#{origin.channel_name}"
    return (origin.channel,)


def watch(args: WatchArgs, origin: Origin, session: Session) -> Reply:
    if args.experiment is None:
        rows = watches.in_channels(session, channels=_here(origin))
        shown = [{"experiment": w.experiment, "by": w.created_by} for w in rows]
        return Reply("watch_list", {"watches": shown})
    what = f"checking `{args.experiment}` in MLflow to watch it"
    return Reply(
        "exp_working",
        {"what": what, "understood": ""},
        jobs=[JobRequest(ADD_TASK, {"experiment": args.experiment, "channel": _channel(origin, args.channel)}, what=what)],
    )


def unwatch(args: UnwatchArgs, origin: Origin, session: Session) -> Reply:
    here = args.channel is None or args.channel in _here(origin)
    channel = origin.channel if here else _channel(origin, args.channel)
    rows = watches.in_channels(session, channels=_here(origin) if here else (channel,))
    wanted = args.experiment.casefold()
    found = [w for w in rows if w.experiment.casefold() == wanted or w.experiment_id == args.experiment]
    if not found:
        names = ", ".join(dict.fromkeys(f"`{w.experiment}`" for w in rows[:10]))
        where = "this channel" if here else channel
        raise NotFoundError(
            f"{where[0].upper() + where[1:]} doesn't watch `{args.experiment}`.",
            hint=f"It watches: {names}." if names else "It watches no experiment; `watch <experiment>` starts one.",
        )
    if not here or origin.source != "slack":  # the terminal's channel is a label, not presence
        _check_elsewhere(found, channel, origin)
    for w in found:
        watches.remove(session, watch_id=w.id)
    return Reply("watch_removed", {"experiment": found[0].experiment, "channel": channel, "here": here})


def _check_elsewhere(found: list[watches.Watch], channel: str, origin: Origin) -> None:
    """Anyone in a channel may stop its notices there (a command Slack sent from it); from elsewhere, and
    from the terminal, only whoever started the watch and the admins, so nobody silences a channel they
    aren't in."""
    rules = get_settings().access
    others = sorted({w.created_by for w in found if w.created_by != origin.user})
    if not others or origin.user in rules.admins:
        return
    raise AccessDenied(
        f"{mrkdwn.channel(channel)}'s watch of `{mrkdwn.escape(found[0].experiment)}` was started by "
        f"{', '.join(str(mrkdwn.user(u)) for u in others)}: from another channel, only they or an admin "
        f"({access.admin_names(rules)}) can stop it. In {mrkdwn.channel(channel)} itself, in Slack, anyone can. Nothing changed."
    )
