"""The one settings class: environment variables, then an optional `labmate.toml`, then defaults.

Read once per process through `get_settings()`; tests call `reset_settings()` after changing
the environment.

The schema is msgspec structs, not pydantic: every process reads the settings before anything
else, the Slack-facing one on every deploy and crash, and pydantic with pydantic-settings cost it
about 100 ms of imports and model building (a quarter of `import slack_bolt, sqlalchemy.orm`);
msgspec validates the same types and constraints in a few milliseconds. Each setting's
environment variable, description and shown default live in its `Annotated` metadata, which the
README's reference, `labmate doctor` and the one-line configuration errors read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import cache, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from msgspec import Meta, Struct, ValidationError, convert, field

EMBEDDED_BROKER = "memory://"
HH_MM = r"^([01]\d|2[0-3]):[0-5]\d$"
"""A 24-hour time of day; configuration errors say so in words (labmate.config_errors.PATTERNS)."""
_USERINFO = re.compile(r"(?P<scheme>\b(?P<name>[A-Za-z][\w+.-]*)://)(?P<userinfo>[^@\s'\"<>]*?)@")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&](?:password|passwd|pwd|secret|client_secret|secret_key|secret_access_key|token|access_token|"
    r"refresh_token|private_token|session_token|id_token|auth|key|api_key|api-key|apikey|sig|signature|"
    r"x-amz-signature|x-amz-security-token|x-goog-signature)=)[^&#\s'\"]+",
    re.I,
)
_ENCODED_URL = re.compile(r"\b[A-Za-z][\w+.-]*%3A%2F%2F[^\s'\"<>&]*", re.I)
"""A URL percent-encoded into another one's query (`?next=https%3A%2F%2Fu%3Apw%40h`): up to its `&`."""
_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


DATABASE_SCHEMES = ("sqlite://", "postgresql://", "postgresql+psycopg://")
BROKER_SCHEMES = ("redis://", "rediss://", EMBEDDED_BROKER)


def mask_url(text: str) -> str:
    """`postgresql://labmate:secret@db/x` -> `postgresql://labmate:***@db/x`, for every URL in `text`
    (a setting, a log line, a git error quoting the URL it cloned), for repr, logs and messages.

    A database or broker password may hold a `/` (SQLAlchemy reads up to the `@`); in a web URL a `/`
    before the `@` is a path (`http://host:8080/path@v1`), and a user name alone is a token
    (`https://<token>@github.com/…`), but an ssh login (`ssh://git@host`) is not. Secrets in the
    query are masked too: `?password=`, `&token=`, and the signatures of presigned artifact URLs
    (S3's `X-Amz-Signature`, GCS's `X-Goog-Signature`, Azure's SAS `sig`), and in a URL percent-encoded
    into another's query (a redirect target)."""
    text = _ENCODED_URL.sub(_masked_encoded, text)
    return _SECRET_QUERY.sub(lambda m: f"{m.group('key')}***", _USERINFO.sub(_masked_userinfo, text))


def _masked_encoded(match: re.Match[str]) -> str:
    from urllib.parse import quote, unquote

    plain = unquote(match.group(0))
    masked = mask_url(plain)
    return match.group(0) if masked == plain else quote(masked, safe="*")


def _masked_userinfo(match: re.Match[str]) -> str:
    scheme, userinfo = match.group("scheme"), match.group("userinfo")
    name = match.group("name").lower()
    web = name.startswith(("http", "git", "ssh", "ws"))
    if web and "/" in userinfo:
        return match.group(0)
    user, colon, _password = userinfo.partition(":")
    if colon:
        return f"{scheme}{user}:***@"
    token_as_user = web and userinfo and "ssh" not in name
    return f"{scheme}***@" if token_as_user else match.group(0)


def about(description: str, *, env: str = "", shown_default: str = "", **constraints: Any) -> Meta:
    """A setting's metadata: what it means, the environment variable that sets it, constraints."""
    extra = {key: value for key, value in (("env", env), ("shown_default", shown_default)) if value}
    return Meta(description=description, extra=extra or None, **constraints)


class SecretStr:
    """A token or secret: its value only through `get_secret_value()`, never in a repr or a dump."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "SecretStr('**********')" if self._value else "SecretStr('')"

    def __str__(self) -> str:
        return "**********" if self._value else ""


class Table(Struct, forbid_unknown_fields=True):
    """A table of labmate.toml: a key it doesn't know is an error (a mistyped `launcher` must not
    leave `launchers` at its default, anyone), reported by config_errors with the nearest known key."""


# The grammar's verbs (bot.grammar.VERBS; a test keeps the two equal), named here so that settings
# can refuse a mistyped one without importing the grammar.
VERB_NAMES = (
    "decide", "decisions", "supersede", "ask", "summary", "compare", "find", "best", "runs", "run", "sweep",
    "status", "cancel", "regress", "regressions", "promote", "cleanup", "delete", "keep", "snooze", "restore",
    "watch", "unwatch", "help",
)


class AccessRules(Table):
    """Who may use what. Entries are Slack user ids (U…/W…), user group ids (S…) or channel ids (C…/G…/D…)."""

    admins: Annotated[list[str], about("Users allowed every verb, including admin-only ones.")] = []
    verbs: Annotated[
        dict[str, list[str]],
        about("Per verb, who may use it. A verb listed here is limited to these entries and the admins."),
    ] = {}

    def __post_init__(self) -> None:
        for verb in self.verbs:
            if verb not in VERB_NAMES:  # a typo would leave the real verb open to everyone
                import difflib

                near = difflib.get_close_matches(verb, VERB_NAMES, n=1)
                hint = f"did you mean '{near[0]}'?" if near else "the commands are " + ", ".join(VERB_NAMES)
                raise ValueError(f"[access.verbs] {verb} = …: there is no command '{verb}'; {hint}")


class TerminalIdentity(Table):
    """Who a terminal user is. By default the operating-system user, under their own login name."""

    users: Annotated[
        dict[str, str],
        about(
            "Operating-system user -> the Slack user id they act as (so their terminal "
            "commands meet the same access rules and decisions as in Slack)."
        ),
    ] = {}
    allow_acting_as: Annotated[
        list[str],
        about(
            "Operating-system users who may run commands as someone else (`labmate say --user`); "
            "the audit row records both."
        ),
    ] = []


ParameterType = Literal["float", "int", "string", "path", "uri"]


class ParameterDeclaration(Table):
    """One parameter of an entry point, as an MLproject file declares it."""

    type: Annotated[ParameterType, about("float, int, string, path or uri (MLflow's types).")] = "string"
    default: Annotated[
        str | int | float | None, about("Its default; none means the parameter is required.")
    ] = None


class ProjectConfig(Table, kw_only=True):
    """One launchable MLflow Project (labmate.toml `[projects.<name>]`). Nothing else can be launched from chat."""

    uri: Annotated[
        str,
        about(
            "Where the MLflow Project is: a local directory (relative to the working directory of the bot "
            "and the workers) or a git URI (`https://…/repo.git`, `git@…`, with `#subdirectory` if needed), which "
            "the worker that runs it fetches with MLflow Projects."
        ),
    ]
    version: Annotated[str | None, about("For a git URI: the commit, branch or tag to run.")] = None
    entry_points: Annotated[
        list[str], about("The entry points that may be launched; the first is the default.", min_length=1)
    ] = field(default_factory=lambda: ["main"])
    experiment: Annotated[str, about("The MLflow experiment its runs log to (created if missing).")]
    launchers: Annotated[
        list[str],
        about(
            "Who may launch it: `*` for anyone, or Slack user ids (U…), user group ids (S…) and "
            "channel ids (C…). Admins always may."
        ),
    ] = field(default_factory=lambda: ["*"])
    max_sweep_size: Annotated[int, about("The most runs one sweep may have.", ge=1)] = 16
    max_parallel_runs: Annotated[
        int, about("The most runs of one sweep that run at once (`parallel:N`).", ge=1)
    ] = 2
    time_limit: Annotated[
        float, about("Seconds a run may take; then it is stopped and marked KILLED.", gt=0, le=30 * 86400)
    ] = 3600.0
    progress_param: Annotated[
        str, about("The parameter that says how many steps a run logs (the card's progress bar).")
    ] = "epochs"
    on_worker_lost: Annotated[
        Literal["fail", "retry"],
        about(
            "When the worker running a launch dies: `fail` marks the launch and its MLflow run FAILED; "
            "`retry` starts it again in a new MLflow run (up to 3 attempts)."
        ),
    ] = "fail"
    parameters: Annotated[
        dict[str, dict[str, ParameterDeclaration]],
        about(
            "Per entry point, its parameters. Needed for a git URI (the bot has no copy of the "
            "MLproject to check values against); the worker checks they match the fetched MLproject. For a "
            "local directory they are read from its MLproject."
        ),
    ] = {}

    def __post_init__(self) -> None:
        self.entry_points = list(dict.fromkeys(self.entry_points))
        if self.version is not None and not self.remote:
            raise ValueError("`version` is for a git URI; a local directory runs as it is")

    @property
    def shown_uri(self) -> str:
        """The URI as messages, MLflow's source tag and logs show it: a token in a git URL masked."""
        return mask_url(self.uri)

    @property
    def remote(self) -> bool:
        """A git URI, or a version of a local repository: only the worker that runs it has that copy."""
        return is_git_uri(self.uri) or (self.uri.startswith("file://") and self.version is not None)

    def local_path(self) -> Path:
        subdirectory = self.uri.partition("#")[2]
        path = project_directory(self.uri)
        return (path / subdirectory if subdirectory else path).resolve()


def is_git_uri(uri: str) -> bool:
    """Fetched with git by the worker; a path or a `file://` URI names a directory on this machine."""
    return ("://" in uri and not uri.startswith("file://")) or uri.startswith("git@")


def project_directory(uri: str) -> Path:
    """The directory a path or `file://` URI names, without its `#subdirectory`."""
    directory = uri.partition("#")[0]
    if directory.startswith("file://"):
        parsed = urlsplit(directory)
        return Path(unquote(parsed.netloc + parsed.path))
    return Path(directory).expanduser()


class RegressSuiteRules(Table):
    """What a suite may run against from chat (labmate.toml `[regress.suites.<name>]`)."""

    allow_callables: Annotated[
        bool, about("Targets may be Python callables (`package.module:function`) for this suite.")
    ] = False
    allow_http: Annotated[
        bool, about("Targets may be HTTP endpoints for this suite (the worker calls the address named in chat).")
    ] = False


class RegressConfig(Table):
    """Regression runs from chat (labmate.toml `[regress]`)."""

    folders: Annotated[
        list[str],
        about(
            "Folders whose suite files may be run from chat (relative to the working directory); "
            "nothing outside them can be.",
            min_length=1,
        ),
    ] = field(default_factory=lambda: ["conversations"])
    workers: Annotated[
        int, about("How many worker processes a run is split for when `workers:` isn't given.", ge=1)
    ] = 2
    max_workers: Annotated[int, about("The most `workers:` a run may ask for.", ge=1)] = 8
    promoters: Annotated[
        list[str],
        about("Who may press Promote (user, group or channel ids); admins always may. Empty: admins only."),
    ] = []
    promote_alias: Annotated[
        str, about("The registered model alias that Promote moves to the candidate.")
    ] = "production"
    suites: Annotated[
        dict[str, RegressSuiteRules],
        about("Per suite name, the target kinds allowed from chat besides MLflow models."),
    ] = {}


RuleName = Literal["failed", "orphans", "scratch", "filters"]


class FilterRule(Table, kw_only=True):
    """A team's own clean-up rule: the runs an MLflow filter string matches, once they are old enough."""

    filter: Annotated[
        str, about("An MLflow search filter, e.g. `metrics.val_f1 < 0.5 and params.model = 'tiny'`.")
    ]
    days: Annotated[float, about("Only runs that started at least this many days ago.", ge=0)] = 7.0
    name: Annotated[str, about("How the proposal names the rule (default: the filter itself).")] = ""


class CleanupRules(Table):
    """Which runs of an experiment the clean-up proposes to delete, each rule with its threshold."""

    rules: Annotated[
        list[RuleName],
        about(
            "The rules that apply: `failed` (FAILED/KILLED runs that logged no metric), `orphans` "
            "(RUNNING runs silent for `orphan_hours`), `scratch` (FINISHED runs of a scratch experiment), `filters`."
        ),
    ] = field(default_factory=lambda: ["failed", "orphans", "scratch", "filters"])
    failed_hours: Annotated[float, about("`failed`: hours since a failed or killed run ended.", ge=0)] = 24.0
    orphan_hours: Annotated[
        float,
        about(
            "`orphans`: hours a RUNNING run logged no new metric, parameter or tag; it is first "
            "marked FAILED with a note, then proposed.",
            gt=0,
        ),
    ] = 24.0
    scratch: Annotated[bool, about("A scratch experiment: its finished runs are proposed too.")] = False
    scratch_days: Annotated[float, about("`scratch`: days since a finished run ended.", ge=0)] = 14.0
    filters: Annotated[list[FilterRule], about("`filters`: the team's own rules.")] = []
    top_k: Annotated[
        int, about("The best runs by the experiment's primary metric that are never proposed.", ge=0)
    ] = 3


class CleanupConfig(Table):
    """Stale-run clean-up (labmate.toml `[cleanup]`): where proposals go and the rules per experiment.

    An experiment's rules are the defaults with what its own table sets on top: `load_settings()`
    merges the two tables before validating them (`_merged_cleanup`).
    """

    channel: Annotated[
        str, about("Post every proposal in this channel (id); default: a DM to each owner.")
    ] = ""
    owners: Annotated[
        dict[str, str],
        about(
            "MLflow user -> Slack user id, for the DMs (an MLflow user that already is a Slack id needs "
            "no entry). Proposals for owners with no Slack id go to `channel`, else to the first admin."
        ),
    ] = {}
    grace_days: Annotated[
        float,
        about("Days a deleted run can be restored (`restore <run>`); then it is removed for good.", ge=0),
    ] = 7.0
    snooze_days: Annotated[float, about("Days a snoozed run is left out of proposals.", gt=0, le=3650)] = 7.0
    daily_at: Annotated[
        str,
        about(
            "When beat sends the day's proposals (HH:MM, UTC).", pattern=HH_MM
        ),
    ] = "07:05"
    gc_backend_store_uri: Annotated[
        str,
        about(
            "For `mlflow gc` when MLFLOW_TRACKING_URI is an `mlflow server`: the server's database URI "
            "(gc works on the database; the artifacts are deleted through the server). Default: the tracking URI."
        ),
    ] = ""
    defaults: Annotated[CleanupRules, about("Rules for every experiment.")] = field(default_factory=CleanupRules)
    experiments: Annotated[
        dict[str, CleanupRules],
        about(
            "Per experiment name, what differs from `defaults`. The daily job scans these experiments."
        ),
    ] = {}

    def rules_for(self, experiment: str) -> CleanupRules:
        return self.experiments.get(experiment, self.defaults)


def _merged_cleanup(table: dict[str, Any]) -> dict[str, Any]:
    """`[cleanup.experiments.<name>]` sets only what differs from `[cleanup.defaults]`."""
    defaults, experiments = table.get("defaults", {}), table.get("experiments")
    if isinstance(defaults, dict) and isinstance(experiments, dict):
        table["experiments"] = {
            name: {**defaults, **own} if isinstance(own, dict) else own for name, own in experiments.items()
        }
    return table


def _demo_project_uri() -> str:
    """The checkout's examples/sales_agent (editable installs), else the working directory's (the
    Docker image keeps examples/ in its WORKDIR)."""
    checkout = Path(__file__).resolve().parent.parent / "examples" / "sales_agent"
    return str(checkout) if (checkout / "MLproject").is_file() else "examples/sales_agent"


def default_projects() -> dict[str, ProjectConfig]:
    """The demo's project, launchable out of the box (`labmate demo` fills its experiment)."""
    return {
        "sales-agent": ProjectConfig(
            uri=_demo_project_uri(),
            entry_points=["train"],
            experiment="sales-agent",
            max_sweep_size=16,
            max_parallel_runs=2,
            time_limit=1800.0,
        )
    }


class DigestChannel(Table, kw_only=True):
    """One channel's daily digest (labmate.toml `[[digest.channels]]`)."""

    channel: Annotated[str, about("The channel id (`C0123ABCD`) or `#name` the digest is posted to.")]
    at: Annotated[
        str, about("Local time of day (HH:MM) it is posted.", pattern=HH_MM)
    ] = "09:00"
    timezone: Annotated[str, about("The IANA time zone of `at`, e.g. `Europe/Paris`.")] = "UTC"
    quiet: Annotated[
        Literal["line", "none"], about("A day with nothing to say: `line` posts one line, `none` posts nothing.")
    ] = "line"

    def __post_init__(self) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"timezone {self.timezone!r} of the digest for {self.channel} is not a time zone; "
                "use an IANA name such as 'Europe/Paris' or 'America/New_York'"
            ) from None


class DigestConfig(Table):
    channels: Annotated[list[DigestChannel], about("Where and when the digest is posted.")] = []


def _config_path() -> Path:
    return Path(os.environ.get("LABMATE_CONFIG", "labmate.toml"))


HOME_SHOWN_DEFAULT = "your user data directory: `~/.local/share/labmate` on Linux, `~/Library/Application Support/labmate` on macOS"


def default_home() -> Path:
    """A per-user data directory (platformdirs), not the working directory: the same command from
    another directory must find the same store."""
    from platformdirs import user_data_path

    return user_data_path("labmate", appauthor=False)


def _port_is_a_number(url: str) -> bool:
    try:
        urlsplit(url).port  # noqa: B018 (urllib checks the port when it is read)
    except ValueError:
        return False
    return True


class ConfigError(Exception):
    """The configuration can't be read: one line naming the file (or variable), the line and what was expected."""


class Settings(Table, kw_only=True):
    home: Annotated[
        Path,
        about(
            "Where embedded state lives: the SQLite knowledge base, the MLflow store, charts, shell history. "
            "The same store whatever directory you run labmate from. A path with `?`, `#` or `%` is refused "
            "(the database URLs would read them as something else).",
            env="LABMATE_HOME",
            shown_default=HOME_SHOWN_DEFAULT,
        ),
    ] = field(default_factory=default_home)
    database_url: Annotated[
        str,
        about(
            "SQLAlchemy URL of the knowledge base. Default: SQLite at $LABMATE_HOME/labmate.db.",
            env="LABMATE_DATABASE_URL",
        ),
    ] = ""
    broker_url: Annotated[
        str,
        about(
            "Celery broker. Default `memory://`: a real worker runs inside the bot process. "
            "Set `redis://host:6379/0` to enqueue for `labmate worker` processes.",
            env="LABMATE_BROKER_URL",
        ),
    ] = EMBEDDED_BROKER
    result_backend: Annotated[
        str,
        about(
            "Celery result backend. Default: in-process for the embedded broker, the broker's Redis otherwise.",
            env="LABMATE_RESULT_BACKEND",
        ),
    ] = ""
    broker_key_prefix: Annotated[
        str,
        about(
            "Prefix of every Redis key labmate's broker and results use, so several deployments "
            "(or test runs) can share one Redis.",
            env="LABMATE_BROKER_KEY_PREFIX",
        ),
    ] = ""
    mlflow_tracking_uri: Annotated[
        str,
        about(
            "MLflow tracking store. Default: SQLite at $LABMATE_HOME/mlflow.db with artifacts beside it.",
            env="MLFLOW_TRACKING_URI",
        ),
    ] = ""
    mlflow_ui_url: Annotated[
        str,
        about(
            "Base URL of the MLflow UI; when set, answers link runs and experiments to it.",
            env="LABMATE_MLFLOW_UI_URL",
        ),
    ] = ""
    slack_bot_token: Annotated[
        SecretStr | None, about("Bot token (xoxb-…) of the Slack app.", env="SLACK_BOT_TOKEN")
    ] = None
    slack_signing_secret: Annotated[
        SecretStr | None,
        about("Signing secret; every HTTP request from Slack is verified with it.", env="SLACK_SIGNING_SECRET"),
    ] = None
    slack_app_token: Annotated[
        SecretStr | None, about("App-level token (xapp-…) for Socket Mode.", env="SLACK_APP_TOKEN")
    ] = None
    slack_api_url: Annotated[
        str,
        about(
            "Base URL of the Slack Web API (tests point it at the fake Slack server).", env="LABMATE_SLACK_API_URL"
        ),
    ] = "https://slack.com/api/"
    command: Annotated[str, about("The slash command labmate answers to.", env="LABMATE_COMMAND")] = "/lab"
    decision_emoji: Annotated[
        str,
        about(
            "Reacting to a message with this emoji (name without colons) logs it as a decision.",
            env="LABMATE_DECISION_EMOJI",
        ),
    ] = "memo"
    job_timeout: Annotated[
        float,
        about("How long `labmate say` waits for a job's replies before giving up.", env="LABMATE_JOB_TIMEOUT", gt=0,
              le=86400),
    ] = 120.0
    primary_metrics: Annotated[
        dict[str, str],
        about("Per experiment name, the metric that ranks its runs (labmate.toml `[primary_metrics]`)."),
    ] = {}
    metric_directions: Annotated[
        dict[str, str],
        about(
            "Per metric name, `lower` or `higher` is better (labmate.toml `[metric_directions]`); "
            "beats the name rule, loses to the experiment's tag `labmate.direction.<metric>` and to `asc`/`desc`."
        ),
    ] = {}
    access: Annotated[AccessRules, about("labmate.toml `[access]`.")] = field(default_factory=AccessRules)
    projects: Annotated[
        dict[str, ProjectConfig],
        about(
            "labmate.toml `[projects.<name>]`: the MLflow Projects that may be launched from chat, "
            "who may launch them and their limits. Default: the demo's `sales-agent` (replaced when you "
            "configure your own)."
        ),
    ] = field(default_factory=default_projects)
    regress: Annotated[
        RegressConfig,
        about(
            "labmate.toml `[regress]`: the suites folders chat may run, `workers:` default and limit, who "
            "may promote and the alias Promote moves, targets allowed per suite (docs/regression-suites.md)."
        ),
    ] = field(default_factory=RegressConfig)
    launch_progress_every: Annotated[
        float,
        about(
            "Seconds between two reads of a running launch's progress from MLflow (its card is "
            "edited at most that often, and never more than once per 2 s).",
            env="LABMATE_LAUNCH_PROGRESS_EVERY",
            gt=0,
        ),
    ] = 2.0
    cleanup: Annotated[
        CleanupConfig,
        about(
            "labmate.toml `[cleanup]`: the stale-run clean-up: where proposals go, the grace period, the "
            "rules per experiment (docs/cleanup.md)."
        ),
    ] = field(default_factory=CleanupConfig)
    terminal: Annotated[TerminalIdentity, about("labmate.toml `[terminal]`.")] = field(
        default_factory=TerminalIdentity
    )
    database_connect_timeout: Annotated[
        float,
        about(
            "Seconds to wait for a new PostgreSQL connection (libpq's minimum is 2).",
            env="LABMATE_DATABASE_CONNECT_TIMEOUT",
            gt=0,
        ),
    ] = 2.0
    database_io_timeout: Annotated[
        float,
        about(
            "Seconds a PostgreSQL connection may leave data unacknowledged before it counts as dead "
            "(a black-holed network fails a command in seconds instead of hanging it).",
            env="LABMATE_DATABASE_IO_TIMEOUT",
            gt=0,
        ),
    ] = 1.0
    database_statement_timeout: Annotated[
        float,
        about(
            "Seconds one PostgreSQL statement may run, lock waits included (migrations: no limit).",
            env="LABMATE_DATABASE_STATEMENT_TIMEOUT",
            gt=0,
        ),
    ] = 10.0
    slack_timeout: Annotated[
        float,
        about(
            "Seconds to wait for one Slack Web API call before counting it as failed (it is retried).",
            env="LABMATE_SLACK_TIMEOUT",
            gt=0,
        ),
    ] = 10.0
    delivery_backoff: Annotated[
        float,
        about(
            "Seconds before a refused reply (or an unreachable database) is tried again; doubles "
            "with each try, up to five minutes, and never sooner than Slack's Retry-After.",
            env="LABMATE_DELIVERY_BACKOFF",
            gt=0,
        ),
    ] = 2.0
    job_stale_after: Annotated[
        float,
        about(
            "A running job whose heartbeat is this many seconds old belongs to a dead worker: "
            "the reaper hands it to another.",
            env="LABMATE_JOB_STALE_AFTER",
            gt=0,
        ),
    ] = 20.0
    worker_preload: Annotated[
        bool,
        about(
            "`labmate worker` imports MLflow and matplotlib before it forks its pool, so the first "
            "question after a start doesn't wait for them and the pool's processes share their memory. Off, a "
            "worker is ready seconds sooner and each pool process imports them on its first job that needs them.",
            env="LABMATE_WORKER_PRELOAD",
        ),
    ] = True
    reap_every: Annotated[
        float,
        about(
            "How often (seconds) beat runs the reaper that sends stored jobs and rescues the jobs "
            "of dead workers.",
            env="LABMATE_REAP_EVERY",
            gt=0,
        ),
    ] = 15.0
    watch_every: Annotated[
        float,
        about(
            "How often (seconds) beat polls the watched experiments for ended runs and checks which "
            "digests are due.",
            env="LABMATE_WATCH_EVERY",
            gt=0,
        ),
    ] = 60.0
    watch_group_over: Annotated[
        int,
        about(
            "More runs than this ending in one watched experiment within one poll (a minute) are "
            "announced in one grouped message instead of one notice each (labmate.toml).",
            ge=1,
        ),
    ] = 5
    digest: Annotated[
        DigestConfig,
        about(
            "labmate.toml `[[digest.channels]]`: per channel, the local time `at` (HH:MM), its `timezone` "
            "and `quiet` (`line` or `none`) of the daily digest. None by default."
        ),
    ] = field(default_factory=DigestConfig)
    delivery_retries: Annotated[
        int,
        about(
            "How many times a reply Slack refused for a while (429, 5xx, timeouts) is retried, with "
            "exponential backoff, before its command is marked `undelivered`; it is then tried again at "
            "the longest of those waits (five minutes at the defaults) for a day.",
            env="LABMATE_DELIVERY_RETRIES",
            ge=0,
        ),
    ] = 8

    def __post_init__(self) -> None:
        allowed = ("lower", "higher", "asc", "desc", "min", "max")
        for metric, value in self.metric_directions.items():
            if value.strip().lower() not in allowed:
                raise ValueError(
                    f"[metric_directions] {metric} = {value!r}: say \"lower\" or \"higher\" (or asc, desc, min, max)"
                )
        self.command = "/" + self.command.lstrip("/")
        try:
            self.home = self.home.expanduser()  # `~/labmate` in labmate.toml or LABMATE_HOME, as a shell would
        except RuntimeError:
            raise ValueError(f"home {str(self.home)!r}: there is no such user's home to expand; give a full path") from None
        if set("?#%") & set(str(self.home)):
            raise ValueError(
                f"home {str(self.home)!r} contains ?, # or %, which the database URLs built from it would read "
                "as something else: choose a folder without them"
            )
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.home / 'labmate.db').resolve()}"
        if not self.database_url.startswith(DATABASE_SCHEMES):
            raise ValueError(
                f"database_url {mask_url(self.database_url)!r} is not a knowledge base labmate can use: give "
                "sqlite:///path/to/labmate.db or postgresql://user:password@host:5432/database"
            )
        if not _port_is_a_number(self.database_url):
            raise ValueError(
                f"database_url {mask_url(self.database_url)!r} has a port that isn't a number: give "
                "postgresql://user:password@host:5432/database"
            )
        if not self.broker_url.startswith(BROKER_SCHEMES):
            raise ValueError(
                f"broker_url {mask_url(self.broker_url)!r} is not a broker labmate can use: give "
                "redis://host:6379/0 (rediss:// with TLS), or leave it unset for the embedded one"
            )
        if self.result_backend and not self.result_backend.startswith(BROKER_SCHEMES[:2]):
            raise ValueError(
                f"result_backend {mask_url(self.result_backend)!r} is not a result store labmate can use: give "
                "redis://host:6379/1, or leave it unset (the broker's Redis)"
            )
        if not self.mlflow_tracking_uri:
            self.mlflow_tracking_uri = f"sqlite:///{(self.home / 'mlflow.db').resolve()}"
        if not self.slack_api_url.endswith("/"):
            self.slack_api_url += "/"

    def __repr__(self) -> str:
        """Passwords masked in every URL, the nested tables' too (a project's git URI, the clean-up's store)."""
        shown = (f"{name}={getattr(self, name)!r}" for name in self.__struct_fields__)
        return mask_url(f"Settings({', '.join(shown)})")

    def as_dict(self) -> dict[str, Any]:
        """Plain values for display: paths as text, secrets masked."""
        from msgspec import to_builtins

        return _masked(to_builtins(self, enc_hook=_shown))

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url == EMBEDDED_BROKER

    @property
    def mlflow_artifact_root(self) -> Path:
        return (self.home / "mlartifacts").resolve()

    @property
    def charts_dir(self) -> Path:
        return (self.home / "charts").resolve()


def _shown(value: Any) -> Any:
    if isinstance(value, (Path, SecretStr)):
        return str(value)
    raise NotImplementedError(f"{type(value).__name__} has no shown form")


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, dict):
        return {key: _masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item) for item in value]
    return value


def _decoded(kind: type, value: Any) -> Any:
    """Paths and secrets from text; msgspec reports a ValueError here as a validation error at its key."""
    if kind not in (Path, SecretStr):
        raise NotImplementedError(f"no decoder for {kind}")
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    return kind(value)


@cache
def _hints(kind: type) -> dict[str, Any]:
    """The fields' annotations, `Annotated` kept (evaluated once: every process reads them as it starts)."""
    from typing import get_type_hints

    return get_type_hints(kind, include_extras=True)


def _metadata(kind: type) -> dict[str, Meta]:
    """Each field's `about()` metadata, by field name."""
    from typing import get_args

    hints = _hints(kind)
    return {
        name: next((m for m in get_args(hints[name])[1:] if isinstance(m, Meta)), Meta())
        for name in kind.__struct_fields__
    }


def env_names() -> dict[str, str]:
    """Setting name -> the environment variable that sets it (only the settings one can set so)."""
    return {
        name: meta.extra["env"]
        for name, meta in _metadata(Settings).items()
        if isinstance(meta.extra, dict) and "env" in meta.extra
    }


def settings_env_names() -> set[str]:
    """Every environment variable name the settings class reads (the compose file test checks against it)."""
    return set(env_names().values())


def from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    """Setting name -> its environment variable's value, for those set. A flag also reads yes/no and
    on/off, as pydantic did (msgspec itself takes true/false/1/0)."""
    from typing import get_args

    hints = _hints(Settings)
    values: dict[str, Any] = {}
    for name, env in env_names().items():
        if env in environ:
            text = environ[env]
            if get_args(hints[name])[:1] == (Path,) and not text.strip():
                continue  # `LABMATE_HOME=` is unset, not the working directory
            values[name] = _flag(text) if bool in get_args(hints[name])[:1] else text
    return values


def _flag(text: str) -> str | bool:
    lowered = text.strip().lower()
    return True if lowered in _TRUE else False if lowered in _FALSE else text


def load_settings(environ: Mapping[str, str] | None = None, path: Path | None = None) -> Settings:
    """The environment over `labmate.toml` over the defaults, validated; ConfigError when something
    can't be read, in one line that says where and what was expected."""
    import tomllib

    environ = os.environ if environ is None else environ
    named = path is None and "LABMATE_CONFIG" in os.environ
    path = _config_path() if path is None else path
    try:
        with path.open("rb") as handle:
            table: dict[str, Any] = tomllib.load(handle)
    except FileNotFoundError:
        if named:  # a mistyped path would silently drop [access] and the projects' launchers
            raise ConfigError(f"{path}: not found, though LABMATE_CONFIG names it; create it (it may be empty) "
                              "or unset LABMATE_CONFIG to read ./labmate.toml") from None
        table = {}
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte {exc.object[exc.start]:#04x}); save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: can't be read ({exc.strerror}); point LABMATE_CONFIG at a readable file") from None
    except tomllib.TOMLDecodeError as exc:
        from labmate.config_errors import toml_syntax_message

        raise ConfigError(toml_syntax_message(path, exc)) from None
    _refuse_secrets_in(path, table)
    from_env = from_environment(environ)
    # A file value the environment overrides is checked too: it is what runs once the variable is unset.
    shadowed = {key: table[key] for key in from_env if key in table}
    table.update(from_env)
    if isinstance(table.get("cleanup"), dict):
        table["cleanup"] = _merged_cleanup(dict(table["cleanup"]))
    settings = _validated(table, path, set(from_env))
    if shadowed:
        _validated(shadowed, path, set())
    return settings


def _validated(table: dict[str, Any], path: Path, from_env: set[str]) -> Settings:
    try:
        return convert(table, Settings, strict=False, dec_hook=_decoded)
    except ValidationError as exc:
        from labmate.config_errors import validation_message

        raise ConfigError(validation_message(str(exc), table, path, env_names(), from_env)) from None


ENVIRONMENT_ONLY = ("slack_bot_token", "slack_signing_secret", "slack_app_token")


def _refuse_secrets_in(path: Path, table: dict[str, Any]) -> None:
    """Secrets come from the environment only: a file gets committed, copied into images and shown."""
    for key in ENVIRONMENT_ONLY:
        if key in table:
            from labmate.config_errors import toml_line

            env = env_names()[key]
            line = toml_line(path, (key,))
            raise ConfigError(f"{path}:{line}: {key} is a secret, read from the environment only: remove it from "
                              f"the file and set {env}")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def reset_settings() -> None:
    get_settings.cache_clear()


def describe() -> list[dict[str, Any]]:
    """Name, default and description of each setting, for the configuration reference."""
    from msgspec import NODEFAULT
    from msgspec.structs import fields

    metadata = _metadata(Settings)
    rows = []
    for info in fields(Settings):
        meta = metadata[info.name]
        extra = meta.extra if isinstance(meta.extra, dict) else {}
        if extra.get("shown_default"):
            default = None
        elif info.default_factory is not NODEFAULT:
            default = info.default_factory()
        else:
            default = info.default
        rows.append(
            {
                "field": info.name,
                "env": extra.get("env", ""),
                "default": default,
                "shown_default": extra.get("shown_default", ""),
                "description": meta.description or "",
            }
        )
    return rows

