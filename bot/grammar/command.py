from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from msgspec import Struct

Access = Literal["read", "write", "admin", "author_or_admin", "owner_or_admin"]


class Command(Struct, frozen=True):
    verb: str
    args: Any
    text: str


class Verb(Struct, frozen=True):
    """One verb of the grammar: how it parses, how it's documented, who may use it by default.

    `parse(rest, now)` gets the text after the verb and returns the verb's typed arguments or
    raises UsageError.
    """

    name: str
    summary: str
    usage: str
    examples: tuple[str, ...]
    access: Access
    parse: Callable[[str, datetime], Any]
    details: str = ""
    aliases: tuple[str, ...] = ()
