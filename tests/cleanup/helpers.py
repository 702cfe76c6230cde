"""What the clean-up tests read back: a proposal by owner, its runs' states, a Slack call's text."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from models import cleanup as proposals
from models.db import session_scope

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "slack"))

from fakeslack import iter_texts


def proposal_for(owner: str) -> proposals.Proposal:
    with session_scope() as session:
        [found] = [p for p in session.query(proposals.Proposal).all() if p.owner == owner]
        session.expunge(found)
        return found


def states(proposal_id: int) -> dict[str, str]:
    with session_scope() as session:
        return {c.run_name: c.state for c in proposals.candidates(session, proposal_id=proposal_id)}


def texts(call: Any) -> str:
    return call.params.get("text", "") + "\n" + "\n".join(iter_texts(call.params.get("blocks") or []))
