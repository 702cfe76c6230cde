"""`labmate regress`: run regression conversations against a baseline and a candidate.

Exit codes: 0 the gate passed, 1 the gate failed, 2 the run could not happen (invalid suite,
target not loadable, bad options).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

EXIT_PASSED, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


def register(app: typer.Typer) -> None:
    app.command("regress")(regress)


def regress(
    suites: Annotated[list[Path], typer.Argument(help="Suite YAML files (conversations/*.yaml).")],
    candidate: Annotated[str | None, typer.Option(help="Candidate target URI (overrides the suite).")] = None,
    baseline: Annotated[str | None, typer.Option(help="Baseline target URI (overrides the suite).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Only conversations with this tag (repeatable).")] = None,
    junit: Annotated[Path | None, typer.Option(help="Write a JUnit XML report here.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the JSON report here.")] = None,
    html: Annotated[Path | None, typer.Option(help="Write a self-contained HTML report here.")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (1 = in process).")] = 1,
    timeout: Annotated[float | None, typer.Option(help="Seconds per turn before it counts as an error.")] = None,
    min_pass_rate: Annotated[float | None, typer.Option(min=0, max=1, help="Gate: minimum pass rate.")] = None,
    max_drop: Annotated[float | None, typer.Option(min=0, max=1, help="Gate: max pass-rate drop.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking/registry URI for models:/ targets (default: MLFLOW_TRACKING_URI, else labmate's embedded store).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show every failing conversation.")] = False,
) -> None:
    """Run regression conversations and apply the gate."""
    from rich.console import Console

    from tasks.regress.errors import RegressError

    console = Console(stderr=False)
    err = Console(stderr=True)
    gate: dict[str, Any] = {}
    if min_pass_rate is not None:
        gate["min_pass_rate"] = min_pass_rate
    if max_drop is not None:
        gate["max_drop"] = max_drop
    options: dict[str, Any] = {}
    if timeout is not None:
        if timeout <= 0:
            err.print("[red]error:[/] --timeout must be positive")
            raise typer.Exit(EXIT_ERROR)
        options["timeout"] = timeout
    import os
    import warnings

    from labmate.bootstrap import person_waiting
    from labmate.settings import get_settings

    person_waiting()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    warnings.filterwarnings("ignore", message=".*Add type hints to the `predict` method.*")
    options["tracking_uri"] = tracking_uri or get_settings().mlflow_tracking_uri
    unwritable = _unwritable([p for p in (junit, json_out, html) if p is not None])
    if unwritable:  # before the run, not after minutes of conversations
        err.print(f"[red]error:[/] cannot write a report to {unwritable}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_ERROR)
    try:
        report = _run(suites, candidate, baseline, tag, gate, options, workers, console)
    except RegressError as exc:
        err.print(f"[red]error:[/] {_one_line(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_ERROR) from None
    from tasks.regress.reports.terminal import render

    render(report, console, verbose=verbose)
    try:
        _write_outputs(report, junit, json_out, html)
    except OSError as exc:
        err.print(f"[red]error:[/] cannot write report: {_one_line(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_ERROR) from None
    raise typer.Exit(EXIT_PASSED if report["verdict"]["passed"] else EXIT_FAILED)


def _one_line(text: str) -> str:
    """One line, with a password in any URL it quotes (MLflow's errors quote the tracking URI) masked."""
    from labmate.settings import mask_url

    return mask_url(" ".join(text.split()))


def _unwritable(paths: list[Path]) -> str:
    """The first report path whose directory doesn't exist or is a path that can't be a file."""
    for path in paths:
        if not path.parent.is_dir():
            return f"{path}: the directory {path.parent} doesn't exist"
        if path.is_dir():
            return f"{path}: it is a directory"
    return ""


def _run(
    suites: list[Path],
    candidate: str | None,
    baseline: str | None,
    tags: list[str] | None,
    gate: dict[str, Any],
    options: dict[str, Any],
    workers: int,
    console: Any,
) -> dict[str, Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tasks.regress.session import execute, plan

    run_plan = plan([str(s) for s in suites], candidate, baseline, tags, gate, options)
    total = len(run_plan.conversations) * len(run_plan.targets)
    with Progress(
        TextColumn("[bold]regress[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} not passing"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("run", total=total, failed=0)
        failed = 0

        def on_result(role: str, result: dict[str, Any]) -> None:
            nonlocal failed
            failed += result["status"] != "pass"
            progress.update(task, advance=1, failed=failed)

        return execute(run_plan, workers=workers, on_result=on_result)


def _write_outputs(report: dict[str, Any], junit: Path | None, json_out: Path | None, html: Path | None) -> None:
    if json_out:
        from tasks.regress.reports.json_report import write_json

        write_json(report, json_out)
    if junit:
        from tasks.regress.reports.junit import write_junit

        write_junit(report, junit)
    if html:
        from tasks.regress.reports.html_report import write_html

        write_html(report, html)
