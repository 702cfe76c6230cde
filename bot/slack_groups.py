"""Slack user-group membership for access rules that name a group (S…), cached for five minutes."""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)
TTL_S = 300.0

_cache: dict[str, tuple[float, frozenset[str]]] = {}
_lock = threading.Lock()


def members(group_id: str) -> frozenset[str]:
    now = time.monotonic()
    with _lock:
        cached = _cache.get(group_id)
        if cached and now - cached[0] < TTL_S:
            return cached[1]
    from bot.post import router

    slack = router().slack
    if slack is None:
        return frozenset()
    try:
        users = frozenset(slack.client.usergroups_users_list(usergroup=group_id).get("users", []))
    except Exception:
        log.warning("could not read the members of user group %s", group_id, exc_info=True)
        return frozenset()
    with _lock:
        _cache[group_id] = (now, users)
    return users


def clear() -> None:
    with _lock:
        _cache.clear()
