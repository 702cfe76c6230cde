"""A delivery that records what jobs answer, installed in place of the Router for the job tests."""

from __future__ import annotations

from typing import Any

import pytest

from labmate import outbox


class Recorder:
    """Like the real delivery: a key is delivered once."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, dict[str, Any], str | None]] = []

    def deliver(self, reply_to: dict[str, Any], template: str, context: dict[str, Any], *, key: str | None = None,
                final: bool = True) -> str | None:
        if key is not None and any(k == key for _, _, k in self.delivered):
            return key
        self.delivered.append((template, context, key))
        return key


@pytest.fixture
def recorder(migrated: str):
    previous = outbox.installed()
    recording = Recorder()
    outbox.install(recording)
    yield recording
    if previous is not None:
        outbox.install(previous)
