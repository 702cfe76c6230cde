"""ORM rows -> plain dicts for templates and jobs (templates never touch the session)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from models.decision import Decision, DecisionLink


def link_url(link: DecisionLink, ui_url: str) -> str:
    if not ui_url:
        return ""
    base = ui_url.rstrip("/")
    detail = link.detail or {}
    if link.kind == "run" and detail.get("experiment_id"):
        return f"{base}/#/experiments/{detail['experiment_id']}/runs/{link.ref}"
    if link.kind == "experiment" and detail.get("experiment_id"):
        return f"{base}/#/experiments/{detail['experiment_id']}"
    if link.kind == "model" and detail.get("version"):
        name = link.ref.split("/")[0].split("@")[0]
        return f"{base}/#/models/{quote(name)}/versions/{detail['version']}"
    return ""


def link_view(link: DecisionLink, ui_url: str = "") -> dict[str, Any]:
    detail = link.detail or {}
    return {
        "kind": link.kind,
        "ref": link.ref,
        "status": link.status,
        "summary": detail.get("summary", ""),
        "url": link_url(link, ui_url),
    }


def decision_view(d: Decision, ui_url: str = "") -> dict[str, Any]:
    return {
        "id": d.id,
        "text": d.text,
        "author": d.author,
        "channel": d.channel,
        "created_at": d.created_at,
        "tags": d.tag_names,
        "links": [link_view(link, ui_url) for link in d.links],
        "permalink": d.permalink,
        "superseded_by": d.superseded_by,
    }
