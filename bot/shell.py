"""`labmate shell`: the interactive terminal, with history and replies shown as they arrive."""

from __future__ import annotations

import sys
import threading
import uuid
from typing import Any

from rich.console import Console

from bot import console as rich_render
from bot import dispatch, grammar
from bot.messages.render import Message, render_reply
from bot.origin import Origin
from bot.post import router
from labmate.settings import get_settings, mask_url

BANNER = (
    "[bold]labmate[/bold], store: [bold]{home}[/bold] (LABMATE_HOME; MLflow at {mlflow}).\n"
    "Type [cyan]help[/cyan] for the commands, [cyan]exit[/cyan] (or Ctrl-D) to leave. The {command} prefix is optional.\n"
    "With the demo loaded (`labmate demo`), try [cyan]summary sales-agent[/cyan], "
    "[cyan]ask show failed runs in sales-agent[/cyan] or [cyan]decide ship the candidate #release[/cyan]."
)


def _lines(history_path: str) -> Any:
    if sys.stdin.isatty():
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory
        from prompt_toolkit.patch_stdout import patch_stdout

        prompt = PromptSession(history=FileHistory(history_path))
        while True:
            with patch_stdout():
                try:
                    line = prompt.prompt("lab> ")
                except KeyboardInterrupt:  # clears the line, as Python's own prompt does; Ctrl-D leaves
                    continue
                except EOFError:
                    return
            yield line
    else:
        yield from (line.rstrip("\n") for line in sys.stdin)


def run_shell(*, user: str, channel: str, actor: str | None = None) -> int:
    """Read and run commands until exit; return how many jobs were still running when it ended."""
    settings = get_settings()
    console = Console()
    lock = threading.Lock()

    def show(_reply_to: dict[str, Any], message: Message) -> None:
        with lock:
            rich_render.show(console, message)

    session = uuid.uuid4().hex
    router().add_console(session, show)
    mlflow = mask_url(settings.mlflow_tracking_uri)
    console.print(BANNER.format(home=settings.home.resolve(), mlflow=mlflow, command=settings.command), highlight=False)
    origin = Origin(user=user, channel=channel, source="shell", session=session, actor=actor)
    pending: list[str] = []
    try:
        for line in _lines(str(settings.home / "shell_history")):
            text = grammar.strip_prefix(line, settings.command)
            if text in ("exit", "quit"):
                break
            if not text:
                continue
            reply = dispatch.handle(text, origin)
            show({}, render_reply(reply))
            if reply.task_ids and not reply.failed:
                pending.extend(reply.task_ids)
                console.print("[dim]… the rest of the answer will appear here when the job finishes.[/dim]")
        _finish_jobs(console, pending, settings.job_timeout)
    except KeyboardInterrupt:
        pass
    finally:
        router().remove_console(session)
    return len(_running(pending))


def _running(task_ids: list[str]) -> list[str]:
    if not task_ids:
        return []
    from celery.result import AsyncResult

    from tasks.app import celery_app

    return [t for t in task_ids if not AsyncResult(t, app=celery_app()).ready()]


def _finish_jobs(console: Console, task_ids: list[str], timeout: float) -> None:
    """Leaving the shell doesn't drop answers still being worked on, for up to LABMATE_JOB_TIMEOUT."""
    from tasks.client import wait

    running = _running(task_ids)
    if running:
        console.print(f"[dim]Waiting for {len(running)} answer(s) before leaving (Ctrl-C to leave now)…[/dim]")
        if "timeout" in wait(running, timeout):
            console.print(f"[dim]Leaving without the answers that didn't come within {timeout:g} s (LABMATE_JOB_TIMEOUT).[/dim]")
