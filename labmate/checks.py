"""Checks of the services labmate is configured to use, each with a one-line verdict.

`labmate health <service>` (the compose health checks) and `labmate doctor` both use them. Nothing
here prints a secret: URLs are shown with their passwords masked, tokens never.
"""

from __future__ import annotations

import base64
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from labmate.settings import mask_url

OK, SKIPPED, FAILED = "ok", "skipped", "FAILED"


@dataclass(frozen=True)
class Verdict:
    name: str
    status: str
    detail: str

    @property
    def failed(self) -> bool:
        return self.status == FAILED

    def line(self) -> str:
        """One line, whatever the detail quotes (libpq's errors span lines with tabs)."""
        return f"{self.status:<7} {self.name}: {' '.join(self.detail.split())}"


def http_get(name: str, url: str, *, timeout: float = 3.0, host_header: str | None = None) -> Verdict:
    """GET `url`; credentials in it (`http://user:password@host`, as MLflow's client accepts) go in a
    Basic Authorization header, since urllib would read them as part of the host name."""
    headers = {"Host": host_header} if host_header else {}
    parts = urllib.parse.urlsplit(url)
    shown = mask_url(url)
    if "@" in parts.netloc:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        url = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Verdict(name, OK, f"{shown} answered {response.status}")
    except urllib.error.HTTPError as exc:
        body = exc.read(200).decode("utf-8", "replace").strip()
        return Verdict(name, FAILED, f"{shown} answered {exc.code} {body or exc.reason}")
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Verdict(name, FAILED, f"{shown} did not answer ({reason})")


def celery_node(name: str, nodename: str, *, timeout: float = 3.0) -> Verdict:
    """Ping one Celery node over the broker (what `celery inspect ping -d <node>` does)."""
    from labmate.settings import get_settings
    from tasks.app import celery_app

    settings = get_settings()
    if settings.embedded_broker:
        return Verdict(name, FAILED, "no shared broker: set LABMATE_BROKER_URL=redis://… (the embedded one can't be pinged)")
    try:
        replies = celery_app().control.ping(destination=[nodename], timeout=timeout)
    except Exception as exc:  # the broker itself is unreachable: kombu/redis raise many kinds
        return Verdict(name, FAILED, f"broker {mask_url(settings.broker_url)} unreachable ({exc})")
    for reply in replies:
        if nodename in reply:
            return Verdict(name, OK, f"{nodename} answered ping")
    return Verdict(name, FAILED, f"{nodename} did not answer ping within {timeout:g} s")


def worker_nodename(hostname: str | None = None) -> str:
    """The node name `labmate worker` runs as (Celery's default, `celery@<host>`)."""
    return f"celery@{hostname or socket.gethostname()}"


def beat_nodename(hostname: str | None = None) -> str:
    """The node name beat answers ping on (Celery 5.7's beat remote control)."""
    from celery.beat import beat_nodename as nodename

    return nodename(hostname)


def database() -> Verdict:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    from labmate.settings import get_settings
    from models.db import script_heads

    url = get_settings().database_url
    shown = mask_url(url)
    if url.startswith("sqlite:///") and ":memory:" not in url:
        from pathlib import Path

        if not Path(url.removeprefix("sqlite:///").split("?", 1)[0]).is_file():
            return Verdict("database", OK, f"{shown} not created yet (each labmate process creates and migrates it as it starts)")
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    connect_args = {"connect_timeout": 3} if url.startswith("postgresql") else {}
    engine = create_engine(url, connect_args=connect_args)
    try:
        with engine.connect() as connection:
            try:
                revisions = {row[0] for row in connection.execute(text("SELECT version_num FROM alembic_version"))}
            except SQLAlchemyError:
                return Verdict("database", FAILED, f"{shown} is reachable but not migrated: run `labmate db upgrade`")
    except SQLAlchemyError as exc:
        return Verdict("database", FAILED, f"{shown} unreachable ({str(getattr(exc, 'orig', exc)).strip()})")
    finally:
        engine.dispose()
    heads = script_heads()
    if revisions != heads:
        return Verdict("database", FAILED, f"{shown} at revision {sorted(revisions)}, code expects {sorted(heads)}: run `labmate db upgrade`")
    return Verdict("database", OK, f"{shown} at revision {', '.join(sorted(revisions))} (current)")


def home() -> Verdict:
    """Whether labmate can keep its state where LABMATE_HOME says, without creating it."""
    from labmate.bootstrap import UnusableHome, usable_home
    from labmate.settings import get_settings

    folder = get_settings().home
    try:
        usable_home(folder, create=False)
    except UnusableHome as exc:
        return Verdict("home", FAILED, str(exc))
    return Verdict("home", OK, str(folder) if folder.exists() else f"{folder} not created yet (the first labmate command creates it)")


def broker() -> Verdict:
    from labmate.settings import get_settings

    settings = get_settings()
    if settings.embedded_broker:
        return Verdict("broker", OK, "memory:// (embedded: each labmate process runs its own worker)")
    url = settings.broker_url
    if not url.startswith(("redis://", "rediss://")):
        return Verdict("broker", SKIPPED, f"{mask_url(url)}: only Redis brokers are checked")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3).ping()
    except redis.RedisError as exc:
        return Verdict("broker", FAILED, f"{mask_url(url)} unreachable ({exc})")
    return Verdict("broker", OK, f"{mask_url(url)} answered PING")


def mlflow() -> Verdict:
    """An HTTP tracking server is asked for one experiment through its API (which, unlike /health,
    checks the Host header); an embedded SQLite store is looked for on disk."""
    from labmate.settings import get_settings

    uri = get_settings().mlflow_tracking_uri
    if uri.startswith(("http://", "https://")):
        base = uri.rstrip("/")
        verdict = http_get("mlflow", f"{base}/api/2.0/mlflow/experiments/search?max_results=1")
        if verdict.failed and "403" in verdict.detail:
            return Verdict("mlflow", FAILED, verdict.detail + " (add this host to the server's --allowed-hosts)")
        return verdict
    if uri.startswith("sqlite:///"):
        from pathlib import Path

        path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
        if path.is_file():
            return Verdict("mlflow", OK, f"embedded store {path} ({path.stat().st_size // 1024} KiB)")
        return Verdict("mlflow", OK, f"embedded store {path} not created yet (`labmate demo` fills it)")
    return Verdict("mlflow", SKIPPED, f"{mask_url(uri)}: only HTTP servers and SQLite stores are checked")


def projects() -> Verdict:
    """Each launchable project's MLproject, read as a launch reads it; a git project is the worker's to
    fetch, so it is named, not cloned. A wrong `uri` was said only when someone tried `run`."""
    from labmate.projects import ProjectError, read_entry_points
    from labmate.settings import get_settings

    configured = get_settings().projects
    if not configured:
        return Verdict("projects", SKIPPED, "none configured: nothing can be launched from chat")
    problems, shown = [], []
    for name, project in sorted(configured.items()):
        if project.remote:
            shown.append(f"{name} (fetched by the worker)")
            continue
        try:
            entry_points = read_entry_points(project.local_path())
        except ProjectError as exc:
            problems.append(f"{name}: {exc}")
            continue
        missing = [e for e in project.entry_points if e not in entry_points]
        if missing:
            problems.append(f"{name}: its MLproject has no entry point {', '.join(missing)}")
        else:
            shown.append(name)
    if problems:
        return Verdict("projects", FAILED, "; ".join(problems) + " (labmate.toml `[projects.<name>]`)")
    return Verdict("projects", OK, ", ".join(shown))


def slack() -> Verdict:
    from labmate.settings import get_settings

    settings = get_settings()
    if settings.slack_bot_token is None or not settings.slack_bot_token.get_secret_value():
        if not settings.embedded_broker:  # a deployment: its workers post every Slack answer
            return Verdict("slack", FAILED, "no SLACK_BOT_TOKEN: with a shared broker the workers post every answer "
                           "to Slack, so set it for `labmate serve` and every `labmate worker`")
        return Verdict("slack", SKIPPED, "no SLACK_BOT_TOKEN (the terminal needs none; `labmate serve` does)")
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    client = WebClient(token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url, timeout=5)
    try:
        auth = client.auth_test()
    except SlackApiError as exc:
        return Verdict("slack", FAILED, f"Slack refused the bot token ({exc.response.get('error')}): check SLACK_BOT_TOKEN")
    except OSError as exc:
        return Verdict("slack", FAILED, f"could not reach {settings.slack_api_url} ({exc})")
    missing = "" if settings.slack_signing_secret is not None else "; SLACK_SIGNING_SECRET is not set (HTTP needs it)"
    return Verdict("slack", FAILED if missing else OK, f"bot @{auth.get('user')} in team {auth.get('team')}{missing}")
