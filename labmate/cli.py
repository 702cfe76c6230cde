"""The `labmate` command line."""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import typer
from rich.console import Console

from labmate import digest_cli, ops_cli, regress_cli
from labmate.settings import EMBEDDED_BROKER, reset_settings

app = typer.Typer(
    name="labmate",
    help="Chat-ops for ML teams: a decision log, MLflow answers and regression conversations, "
    "in Slack and in this terminal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The knowledge base.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@app.command()
def shell(
    user: str | None = typer.Option(
        None, "--user", "-u", callback=lambda value: _an_id(value, "--user"),
        help="Run the commands as this user (needs \\[terminal] allow_acting_as). Default: you, by your login.",
    ),
    channel: str = typer.Option("terminal", "--channel", "-c", callback=lambda value: _an_id(value, "--channel"),
                                help="The channel your commands are recorded under."),
) -> None:
    """Use labmate interactively in this terminal (embedded defaults: no Slack, Redis or servers)."""
    console = Console()
    _prepare_terminal(console)
    who, actor = _identity(console, user)
    from bot.shell import run_shell

    _leave_now_if_jobs_still_run(run_shell(user=who, channel=channel, actor=actor), 0)


@app.command()
def say(
    text: str = typer.Argument(..., help='The command, e.g. "decide ship it #release" (the /lab prefix is optional).'),
    user: str | None = typer.Option(
        None, "--user", "-u", callback=lambda value: _an_id(value, "--user"),
        help="Run the command as this user (needs \\[terminal] allow_acting_as). Default: you.",
    ),
    channel: str = typer.Option("terminal", "--channel", "-c", callback=lambda value: _an_id(value, "--channel"),
                                help="Run the command in this channel."),
    as_json: bool = typer.Option(False, "--json", help="Print the Block Kit payloads exactly as they would be posted."),
) -> None:
    """Run one command, wait for every reply (jobs included), print them. Exit 0 ok, 1 bad input, 2 internal error."""
    console = Console(soft_wrap=True) if as_json else Console()
    _prepare_terminal(console, as_json=as_json)
    who, actor = _identity(console, user, as_json=as_json)
    from bot.terminal import say as run_say

    signal.signal(signal.SIGINT, _leave_on_ctrl_c)

    outcome = run_say(text, user=who, channel=channel, as_json=as_json, console=console, actor=actor)
    _leave_now_if_jobs_still_run(outcome.unfinished, outcome.exit_code)
    raise typer.Exit(outcome.exit_code)


def _an_id(value: str | None, option: str) -> str | None:
    """A user or channel as Slack's ids are: one word of at most 64 characters (what the database keeps)."""
    if value is not None and (len(value) > 64 or not value.isprintable() or not value.strip() or " " in value):
        raise typer.BadParameter(f"{option} takes one word of at most 64 printable characters, like a Slack id (U0123ABCD)")
    return value


def _leave_now_if_jobs_still_run(unfinished: int, code: int) -> None:
    """A job still running on this process's embedded worker holds a pool thread the interpreter
    would wait for at exit (as long as the job takes). Leave at once instead: the next start's reap
    closes its ledger row ("the terminal session that asked for it ended")."""
    if unfinished:
        _leave_now(code)


def _leave_on_ctrl_c(_signum: int, _frame: object) -> None:
    """Ctrl-C while `say` waits: leave at once, wherever the main thread is. The job its embedded worker
    runs holds a pool thread that a normal exit would wait for, and an exception from here has to
    climb through Celery, Typer and click first (Typer turns it into exit code 130)."""
    from labmate.settings import get_settings  # loaded already: `say` read it before it waited

    stale = f"{get_settings().job_stale_after:g}"
    print(f"\nStopped waiting. What this command started stops with this terminal; a labmate command run "
          f"{stale} s or more from now records it as ended (a launch as failed).", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def _leave_now(code: int) -> None:
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@app.command()
def serve(
    port: int = typer.Option(3000, min=1, max=65535, help="HTTP port for /slack/events and /healthz (in Socket Mode, /healthz only)."),
    host: str | None = typer.Option(
        None, help="Interface to listen on: 0.0.0.0 over HTTP; in Socket Mode 127.0.0.1 (only its /healthz "
        "listens, for a health check run beside it).", show_default=False,
    ),
    workers: int = typer.Option(1, min=1, help="WSGI worker processes."),
    threads: int = typer.Option(4, min=1, help="Threads per worker process: requests handled at once (idle keep-alive connections wait in the HTTP router, not in a thread)."),
    socket_mode: bool = typer.Option(False, "--socket-mode", help="Connect to Slack over Socket Mode instead of HTTP."),
) -> None:
    """Serve the Slack app: HTTP (signed requests, production WSGI server) or Socket Mode."""
    from labmate.bootstrap import configure_logging, prepare

    configure_logging()
    prepare()
    from bot.server import run_http, run_socket_mode

    if socket_mode:
        run_socket_mode(host=host or "127.0.0.1", port=port)
    else:
        run_http(host=host or "0.0.0.0", port=port, workers=workers, threads=threads)


@app.command()
def worker(
    queues: str = typer.Option("default,launch,regress", help="Comma-separated queues to consume."),
    concurrency: int = typer.Option(2, min=1, help="Worker processes."),
    loglevel: str = typer.Option("INFO", help="Log level."),
) -> None:
    """Run a Celery worker for labmate's jobs (needs LABMATE_BROKER_URL=redis://…)."""
    from labmate.bootstrap import configure_logging, prepare
    from labmate.settings import get_settings

    loglevel = _log_level(loglevel)
    configure_logging(loglevel)
    if get_settings().embedded_broker:
        Console(stderr=True).print(
            "labmate worker needs a shared broker: set LABMATE_BROKER_URL=redis://localhost:6379/0. "
            "With the embedded default, `labmate serve` and `labmate shell` run their own worker."
        )
        raise typer.Exit(1)  # the configuration, not labmate, is what's wrong
    prepare()
    from bot.post import router
    from tasks.app import celery_app

    if not router().reaches_slack:  # every answer a worker makes goes to Slack
        Console(stderr=True).print("labmate worker: SLACK_BOT_TOKEN is not set, so this worker can't post answers "
                                   "to Slack (they are recorded as undelivered). Set it where the workers run.")
    argv = ["worker", f"--queues={queues}", f"--concurrency={concurrency}", f"--loglevel={loglevel}"]
    if "launch" in (q.strip() for q in queues.split(",")):
        # A training run holds its process for minutes or hours: a worker that runs them takes the next
        # job only when a process is free, so a waiting launch goes to another (idle) worker instead.
        argv.append("--disable-prefetch")
    celery_app().worker_main(argv)


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(name: str) -> str:
    if name.upper() not in LOG_LEVELS:
        raise typer.BadParameter(f"{name!r} is not a log level; use one of {', '.join(LOG_LEVELS)}.",
                                 param_hint="'--loglevel'")
    return name.upper()


@app.command()
def demo() -> None:
    """Fill the embedded MLflow store with the sales-agent demo: real runs, two failures, a registered model.

    Idempotent: a second run adds nothing.
    """
    from labmate.bootstrap import Unreachable, configure_logging, prepare
    from labmate.settings import get_settings

    configure_logging("WARNING")
    prepare()
    from labmate.settings import mask_url
    from tasks.mlflow_io.demo import DemoError, run_demo

    settings = get_settings()
    console = Console()
    server_uri = settings.mlflow_tracking_uri.startswith(("http://", "https://"))
    if server_uri:
        from labmate import checks

        server = checks.mlflow()  # MLflow's client retries an unreachable server for minutes
        if server.failed:
            raise Unreachable(f"the MLflow server {server.detail}: start it, or unset MLFLOW_TRACKING_URI for the embedded store")
    shown = mask_url(settings.mlflow_tracking_uri)
    console.print(f"Store: [bold]{settings.home.resolve()}[/bold] (LABMATE_HOME; MLflow at {shown})", highlight=False)
    console.print("[dim]loading MLflow and scikit-learn…[/dim]")
    try:
        report = run_demo(
            settings.mlflow_tracking_uri,
            # A server keeps the artifacts where it was told to (--artifacts-destination); a path of this
            # machine would be one its other clients, and the server itself, can't read.
            artifact_location=None if server_uri else str(settings.mlflow_artifact_root),
            progress=lambda line: console.print(f"[dim]{line}[/dim]", highlight=False),
        )
    except DemoError as exc:
        console.print(f"[red]The demo could not be set up:[/red] {exc}")
        raise typer.Exit(2) from None
    except Exception as exc:  # MLflow's client failing mid-demo (its server went away): one masked line
        from tasks.mlflow_io import client_error

        explained = client_error(exc)
        first_line = (mask_url(str(exc)).splitlines() or [""])[0]
        shown = str(explained) if explained is not None else f"{type(exc).__name__}: {first_line}"
        console.print(f"[red]The demo could not be set up:[/red] {shown}", highlight=False)
        raise typer.Exit(2) from None
    runs = ", ".join(f"{len(ids)} {status.lower()}" for status, ids in sorted(report.runs_by_status.items()))
    aliases = ", ".join(f"@{alias} = version {version}" for alias, version in sorted(report.aliases.items()))
    verb = "Created" if report.created else "Already there (nothing added)"
    console.print(
        f"{verb}: experiment [bold]{report.experiment_name}[/bold] ({runs}); "
        f"model [bold]{report.model_name}[/bold] ({aliases}) in {report.seconds:.0f} s.\n"
        f"Try: [cyan]labmate say \"decide ship the candidate model:{report.model_name}@candidate #release\"[/cyan]"
    )


@app.command()
def beat(loglevel: str = typer.Option("INFO", help="Log level.")) -> None:
    """Run the Celery beat that schedules labmate's periodic jobs (run exactly one; needs a Redis broker)."""
    from labmate.bootstrap import configure_logging, prepare
    from labmate.settings import get_settings

    loglevel = _log_level(loglevel)
    configure_logging(loglevel)
    settings = get_settings()
    if settings.embedded_broker:
        Console(stderr=True).print("labmate beat needs a shared broker: set LABMATE_BROKER_URL=redis://localhost:6379/0.")
        raise typer.Exit(1)
    prepare()
    from tasks.app import celery_app

    schedule = settings.home / "celerybeat-schedule"
    celery_app().start(["beat", f"--loglevel={loglevel}", f"--schedule={schedule}"])


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the knowledge base's migrations (also done by every labmate process on start)."""
    from labmate.bootstrap import prepare
    from models.db import current_revision

    prepare()
    Console().print(f"knowledge base at revision {current_revision()}")


def _prepare_terminal(console: Console, *, as_json: bool = False) -> None:
    """Migrate the knowledge base; a failure is shown like any other error (no traceback): a database
    that can't be reached in one line (exit 1, by `main`), anything else with an error id (exit 2)."""
    from labmate.bootstrap import configure_logging, prepare
    from labmate.settings import ConfigError

    _terminal_jobs_in_process()
    configure_logging("WARNING", to_file=True)
    try:
        prepare()
        _settle_what_ended_terminals_left()
    except ConfigError:  # one line saying what to do (a database down, a home labmate can't write), exit 1
        raise
    except Exception:
        import logging

        from bot.messages.render import render
        from labmate.errors import new_error_id
        from labmate.settings import get_settings

        error_id = new_error_id()
        logging.getLogger("labmate").exception("could not open the knowledge base [%s]", error_id)
        message = render(
            "error",
            {
                "message": "labmate could not open its knowledge base.",
                "hint": f"Check LABMATE_DATABASE_URL or the files under {get_settings().home}; "
                "the details are in labmate.log there.",
                "error_id": error_id,
            },
        )
        if as_json:
            console.print_json(json.dumps([message.payload()]))
        else:
            from bot.console import show

            show(console, message)
        raise typer.Exit(2) from None


def _identity(console: Console, requested: str | None, *, as_json: bool = False) -> tuple[str, str]:
    """(user, actor) for this terminal, or exit 1 with the reason (audited like any refusal)."""
    from bot.identity import login, terminal_user
    from labmate.errors import LabmateError
    from labmate.settings import get_settings

    try:
        return terminal_user(requested, get_settings())
    except LabmateError as exc:
        from bot import dispatch
        from bot.messages.render import render_reply
        from bot.origin import Origin

        origin = Origin(user=requested or login(), source="shell", actor=login())
        reply = dispatch.refuse(exc, origin, f"--user {requested}")
        message = render_reply(reply)
        if as_json:
            console.print_json(json.dumps([message.payload()]))
        else:
            from bot.console import show

            show(console, message)
        raise typer.Exit(1) from None


def _settle_what_ended_terminals_left() -> None:
    """A `labmate say` that stopped waiting left its job running on the worker that died with it: once
    its heartbeat is stale, the next terminal command gives it up (a launch fails and leaves `status`),
    even one that starts no worker. One query when there is nothing to do, without importing
    the job machinery (Celery) that only the giving up needs."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import DateTime, String, column, select, table

    from labmate.settings import get_settings
    from models.db import session_scope

    ledger = table("jobs", column("state", String), column("heartbeat_at", DateTime(timezone=True)))
    cutoff = datetime.now(UTC) - timedelta(seconds=get_settings().job_stale_after)
    with session_scope() as session:
        stale = session.execute(
            select(ledger.c.state).where(ledger.c.state == "running", ledger.c.heartbeat_at < cutoff).limit(1)
        ).first()
    if stale is not None:
        from tasks.maintenance import reap_left_by_terminals

        reap_left_by_terminals()


def _terminal_jobs_in_process() -> None:
    """The terminal shows job replies as they arrive, so its jobs run on its own in-process worker:
    a remote worker could only post them to Slack."""
    os.environ["LABMATE_BROKER_URL"] = EMBEDDED_BROKER
    os.environ.pop("LABMATE_RESULT_BACKEND", None)
    from labmate.bootstrap import person_waiting

    person_waiting()
    reset_settings()


regress_cli.register(app)
ops_cli.register(app)
digest_cli.register(app)


def _flags_show_no_type() -> None:
    """typer 0.29 prints a type beside every flag (`--json <bool>`, `--help <bool>`), though a flag
    takes no value; show none for flags, as click does, and keep `<int>`/`<str>` for real values."""
    from typer.core import TyperOption

    original = TyperOption.display_type_rich
    if getattr(original, "labmate_flags", False):
        return

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else original(self, ctx)

    display_type_rich.labmate_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


def main() -> None:
    """Exit codes: 0 ok, 1 wrong input (a usage error, unreadable configuration), 2 internal error.
    Click's own convention is 2 for usage errors; labmate's README promises 1."""
    _flags_show_no_type()
    try:
        _run(app)
    finally:
        # The process ends here. Python's last collection walks every object the imports made
        # (typer, rich, SQLAlchemy, Jinja2; MLflow for a job): 100 ms of a 0.45 s `say help`, 0.2 s
        # after an MLflow answer. Frozen objects are skipped; atexit handlers, logging's flush and
        # the modules' own teardown still run, and the OS takes the memory back either way.
        import gc

        gc.freeze()


def _run(app: typer.Typer) -> None:
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError  # typer vendors click

    from labmate.settings import ConfigError

    try:
        code = app(standalone_mode=False)
    except KeyboardInterrupt:  # at once: `say` may be waiting on a job its embedded worker still runs
        print(file=sys.stderr)
        _leave_now(130)
    except ConfigError as exc:
        print(f"labmate: {exc}", file=sys.stderr)
        sys.exit(1)
    except NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(0)
    except UsageError as exc:
        exc.show()
        # `labmate regress` is a CI gate whose 1 means "the gate failed": a typo in its options must
        # not read as that, so its usage errors are its documented 2 ("the run could not happen").
        sys.exit(2 if exc.ctx is not None and exc.ctx.command.name == "regress" else 1)
    except ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("Aborted.", file=sys.stderr)
        sys.exit(1)
    except Exception:  # our bug or an unexplained failure: its traceback, with any URL's password masked
        import traceback

        from labmate.settings import mask_url

        print(mask_url(traceback.format_exc()), file=sys.stderr, end="")
        sys.exit(2)  # as documented: 1 is bad input, 2 labmate's own failure
    if code == 130:  # Ctrl-C, which typer turns into this code: leave at once, as above
        print(file=sys.stderr)
        _leave_now(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
