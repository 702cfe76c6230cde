"""The rich terminal report: verdict, summary, new failures and fixes first."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

_STATUS_STYLE = {"pass": "green", "fail": "red", "error": "magenta"}
_CHANGE_LABEL = {
    "new_failure": "[bold red]NEW FAILURE[/]",
    "fix": "[bold green]FIX[/]",
    "still_failing": "[yellow]still failing[/]",
    "passing": "[dim]passing[/]",
    None: "",
}


def _status(value: str | None) -> str:
    return f"[{_STATUS_STYLE.get(value or '', 'white')}]{value or '-'}[/]"


def _clip(text: str | None, limit: int = 160) -> str:
    if text is None:
        return "—"
    text = text.replace("\n", " ")
    return escape(text if len(text) <= limit else text[: limit - 1] + "…")


def render(report: dict[str, Any], console: Console, verbose: bool = False) -> None:
    roles = list(report["targets"])
    summary = Table(title="Regression summary", show_lines=False)
    summary.add_column("target")
    summary.add_column("uri", overflow="fold")
    for column in ("pass rate", "passed", "failed", "errors", "p95 latency"):
        summary.add_column(column, justify="right")
    for role in roles:
        s = report["summary"][role]
        p95 = "—" if s["p95_latency_ms"] is None else f"{s['p95_latency_ms']:.0f} ms"
        summary.add_row(role, escape(report["targets"][role]), f"{s['pass_rate']:.1%}", str(s["passed"]),
                        str(s["failed"]), str(s["errors"]), p95)
    console.print(summary)

    changed = [e for e in report["conversations"] if e["change"] in ("new_failure", "fix")]
    failing = [e for e in report["conversations"] if e["status"]["candidate"] != "pass" and e not in changed]
    for entry in changed + (failing if verbose or "baseline" not in report["targets"] else []):
        console.print(_entry_panel(entry, roles))

    table = Table(title="Conversations")
    table.add_column("conversation")
    table.add_column("tags")
    for role in roles:
        table.add_column(role)
    table.add_column("change")
    for entry in report["conversations"]:
        table.add_row(escape(entry["key"]), escape(", ".join(entry["tags"])),
                      *(_status(entry["status"].get(role)) for role in roles), _CHANGE_LABEL[entry["change"]])
    console.print(table)

    verdict = report["verdict"]
    if verdict["passed"]:
        body = "[bold green]GATE PASSED[/]"
    else:
        body = "[bold red]GATE FAILED[/]\n" + "\n".join(f"• {escape(r)}" for r in verdict["reasons"])
    for note in verdict["notes"]:
        body += f"\n[dim]{escape(note)}[/]"
    console.print(Panel(body, title="verdict", border_style="green" if verdict["passed"] else "red"))


def _describe_failure(failure: dict[str, Any]) -> str:
    if failure["expectation"]:
        detail = f" ({failure['detail']})" if failure["detail"] else ""
        return f"expected {_clip(failure['expectation'])}{_clip(detail) if detail else ''}"
    return f"error: {_clip(failure['detail'])}"


def _entry_panel(entry: dict[str, Any], roles: list[str]) -> Panel:
    lines = [f"tags: {escape(', '.join(entry['tags']) or '—')}   "
             + "   ".join(f"{role}: {_status(entry['status'].get(role))}" for role in roles)]
    div = entry.get("divergence")
    if div:
        lines.append(f"first divergence at turn {div['turn']}: user: {_clip(div['user'])}")
        lines.append(f"  baseline:  {_clip(div['baseline_reply'])}")
        lines.append(f"  candidate: {_clip(div['candidate_reply'])}")
        for role in ("baseline", "candidate"):
            for failed in div[f"{role}_failed"]:
                lines.append(f"  [red]✗[/] {role} expected {_clip(failed)}")
            first = div[f"{role}_first_failure"]
            if first and first["turn"] != div["turn"]:
                lines.append(f"  [red]✗[/] {role} turn {first['turn']}: {_describe_failure(first)}")
    elif entry.get("failure"):
        f = entry["failure"]
        lines.append(f"turn {f['turn']}: user: {_clip(f['user'])}")
        lines.append(f"  reply: {_clip(f['reply'])}")
        if f["expectation"]:
            lines.append(f"  [red]✗[/] expected {_clip(f['expectation'])}"
                         + (f" ({_clip(f['detail'])})" if f["detail"] else ""))
        elif f["detail"]:
            lines.append(f"  [magenta]error:[/] {_clip(f['detail'])}")
    title = f"{_CHANGE_LABEL[entry['change']] or _status(entry['status']['candidate'])} {escape(entry['key'])}"
    return Panel(Group(*lines), title=title, title_align="left")
