"""Who may use which verb: `labmate.toml` `[access]` over the verbs' defaults.

Defaults: everyone may read and decide; admin verbs are for admins; `author_or_admin`
verbs for the author of the thing changed and for admins; `owner_or_admin` verbs (cancel) for
whoever started the thing and for admins. A verb listed under `[access.verbs]` is limited to
those users, user groups and channels (plus admins): a listing narrows who may use a verb and
grants nothing more, except for `supersede`, whose listed entries may replace anyone's decision
(the README says so). Launching a project is also limited by the project's own `launchers` list
in labmate.toml, checked on every launch and cancel.

A channel entry matches only a command Slack sent from that channel: in the terminal the channel
is a label the typist chooses (`--channel`), so it can't open what its listing guards.
"""

from __future__ import annotations

from bot.grammar.command import Verb
from bot.messages import mrkdwn
from bot.origin import Origin
from labmate.errors import AccessDenied
from labmate.settings import AccessRules, ProjectConfig


def _names(entries: list[str]) -> str:
    shown = [f"<@{e}>" if e[:1] in "UW" else f"<!subteam^{e}>" if e[:1] == "S" else f"<#{e}>" for e in entries]
    return ", ".join(shown) or "nobody"


def admin_names(rules: AccessRules) -> str:
    """The admins as mentions, for a message that says who else may."""
    return _names(rules.admins) if rules.admins else "none are configured in labmate.toml"


def _in_group(entries: list[str], origin: Origin) -> bool:
    groups = [e for e in entries if e.startswith("S")]
    if any(g in origin.user_groups for g in groups):
        return True
    if origin.source != "slack" or not groups:
        return False
    from bot import slack_groups

    return any(origin.user in slack_groups.members(g) for g in groups)


def _matches(entries: list[str], origin: Origin) -> bool:
    in_channel = origin.source == "slack" and origin.channel in entries
    return origin.user in entries or in_channel or _in_group(entries, origin)


def check(verb: Verb, origin: Origin, rules: AccessRules) -> None:
    if origin.user in rules.admins:
        return
    listed = rules.verbs.get(verb.name)
    if listed is not None:
        if _matches(listed, origin):
            return
        raise AccessDenied(
            f"You can't use `{verb.name}` here. It is limited to {_names(listed)} and the admins "
            f"({admin_names(rules)})."
        )
    if verb.access == "admin":
        raise AccessDenied(f"`{verb.name}` is for admins: {admin_names(rules)}. Ask one of them.")


def check_author(verb: str, author: str, origin: Origin, rules: AccessRules) -> None:
    """The author may change their own; admins, and whoever labmate.toml names for the verb, anyone's."""
    listed = rules.verbs.get(verb)
    if origin.user == author or origin.user in rules.admins or (listed is not None and _matches(listed, origin)):
        return
    raise AccessDenied(
        f"Only its author ({mrkdwn.user(author)}) or an admin ({admin_names(rules)}) can `{verb}` that decision."
    )


def check_owner(verb: str, owner: str, what: str, origin: Origin, rules: AccessRules) -> None:
    """Whoever started it may act on their own, admins on anyone's. A listing for the verb (checked by
    `check` before this) only narrows who may use it at all."""
    if origin.user == owner or origin.user in rules.admins:
        return
    raise AccessDenied(f"Only whoever launched {what} ({mrkdwn.user(owner)}) or an admin ({admin_names(rules)}) can `{verb}` it.")


def may_launch(project_name: str, project: ProjectConfig, origin: Origin, rules: AccessRules) -> bool:
    return origin.user in rules.admins or "*" in project.launchers or _matches(project.launchers, origin)


def check_launch(project_name: str, project: ProjectConfig, origin: Origin, rules: AccessRules) -> None:
    if may_launch(project_name, project, origin, rules):
        return
    raise AccessDenied(
        f"You can't launch `{project_name}`. It is limited to {_names(project.launchers)} and the admins "
        f"({admin_names(rules)})."
    )


def matches(entries: list[str], origin: Origin) -> bool:
    """`origin`'s user, channel or one of its user groups is listed in `entries`."""
    return _matches(entries, origin)


def names(entries: list[str]) -> str:
    """Entries as Slack mentions, for a message that says who may."""
    return _names(entries)
