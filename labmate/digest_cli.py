"""`labmate digest`: the daily digest now, in the terminal (no Slack token) or posted to its channels."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    app.command("digest")(digest)


def digest(
    now: bool = typer.Option(False, "--now", help="Make the digest now, up to this moment (without it: when it is posted)."),
    channel: str | None = typer.Option(None, "--channel", "-c", help="Only this configured channel."),
    show: bool = typer.Option(False, "--print", help="Print it here even when a Slack token is set (nothing is posted)."),
) -> None:
    """The daily digest of the last day: runs per experiment, new bests, launches, decisions. Posted by
    `labmate beat` at each channel's time (the `digest.channels` tables of labmate.toml); `--now` makes it at once,
    and prints it here when no Slack token is set. A channel gets one digest a day, whoever asks."""
    from labmate.bootstrap import configure_logging, person_waiting, prepare
    from labmate.settings import get_settings

    person_waiting()
    configure_logging("WARNING", to_file=True)
    settings = get_settings()
    console = Console(markup=False, highlight=False)  # labmate.toml's [[tables]] are text, not rich markup
    channels = [c for c in settings.digest.channels if channel is None or c.channel == channel]
    if channel is not None and not channels:
        known = ", ".join(c.channel for c in settings.digest.channels) or "none"
        console.print(f"`{channel}` has no digest in labmate.toml ([[digest.channels]]); configured: {known}.")
        raise typer.Exit(1)
    if not now:
        if not channels:
            console.print("No digest is scheduled: add [[digest.channels]] to labmate.toml. `labmate digest --now` "
                          "prints one here.")  # fmt: skip
        for c in channels:
            console.print(f"{c.channel}: every day at {c.at} ({c.timezone}); quiet days: {c.quiet}.")
        return
    prepare()
    if show or settings.slack_bot_token is None:
        _print(console, channels[0].channel if channels else None)
        return
    _post(console, channels)


def _print(console: Console, channel: str | None) -> None:
    from bot.console import show
    from bot.messages.render import render
    from tasks.watch import digest

    built = digest.build(datetime.now(UTC), channel=channel, quiet="line")
    assert built is not None
    template, context = built
    show(console, render(template, context))


def _post(console: Console, channels: list) -> None:  # type: ignore[type-arg]
    from bot.post import router
    from labmate import outbox
    from labmate.outbox import DeliveryError, TransientDeliveryError
    from models import watch as watches
    from models.db import session_scope
    from tasks.jobs import DELIVERY
    from tasks.watch import digest

    if not channels:
        console.print("No digest channel in labmate.toml ([[digest.channels]]); --print shows the digest here.")
        raise typer.Exit(1)
    router()
    already = {  # what the day's row says, for the run that finds it claimed
        watches.DELIVERED: "was already posted",
        watches.QUIET: "was a quiet day, already recorded",
        watches.PENDING: "is being posted now (by labmate beat, or another `labmate digest --now`)",
        watches.UNDELIVERED: "couldn't be posted (Slack refused it); labmate beat tries again",
    }
    now = datetime.now(UTC)
    failed = False
    for config in channels:
        day, _time_has_come = digest.local_day(config, now)
        with session_scope() as session:
            claimed = watches.claim_digest(session, channel=config.channel, day=day)
            made = None if claimed else watches.digest_of(session, channel=config.channel, day=day)
            state = made.state if made is not None else watches.DELIVERED
        if not claimed:
            console.print(f"{config.channel}: today's digest ({day}) {already.get(state, already[watches.DELIVERED])}; "
                          "nothing posted.")
            continue
        replies = digest.post_work(config.channel, day, now, up_to_now=True)
        if not replies:
            console.print(f"{config.channel}: a quiet day, and quiet = \"none\": nothing posted.")
            continue
        [(template, context)] = replies
        own = context[DELIVERY]
        shown = {k: v for k, v in context.items() if k != DELIVERY}
        try:
            outbox.deliver(own["reply_to"], template, shown, key=own["key"])
        except TransientDeliveryError as exc:
            # Slack's outage, not the channel: the day stays unclaimed, so running this again, or beat at the
            # channel's time, posts it (its delivery key finds a post that reached Slack after all)
            with session_scope() as session:
                watches.release_digest(session, channel=config.channel, day=day)
            console.print(f"{config.channel}: not posted: {exc}. Run `labmate digest --now` again later; "
                          "otherwise beat posts it at its time.")
            failed = True
            continue
        except DeliveryError as exc:
            digest.settle(config.channel, day, "undelivered", str(exc))
            console.print(f"{config.channel}: not posted: {exc}")
            failed = True
            continue
        digest.settle(config.channel, day, "ok", "")
        console.print(f"{config.channel}: posted the digest of {day}.")
    if failed:
        raise typer.Exit(2)
