"""The one settings class: environment variables, then an optional `labmate.toml`, then defaults.

Read once per process through `get_settings()`; tests call `reset_settings()` after changing
the environment.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

EMBEDDED_BROKER = "memory://"
URL_FIELDS = ("database_url", "broker_url", "result_backend", "mlflow_tracking_uri", "mlflow_ui_url", "slack_api_url")
_USERINFO = re.compile(r"^(?P<scheme>[\w+.-]+://)(?P<user>[^:/@]*):(?P<password>[^@/]*)@")


def mask_url(url: str) -> str:
    """`postgresql://labmate:secret@db/x` -> `postgresql://labmate:***@db/x` (for repr, logs and messages)."""
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", url)


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower().removeprefix("labmate_"))


class AccessRules(BaseModel):
    """Who may use what. Entries are Slack user ids (U…/W…), user group ids (S…) or channel ids (C…/G…/D…)."""

    admins: list[str] = Field(default_factory=list, description="Users allowed every verb, including admin-only ones.")
    verbs: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Per verb, who may use it. A verb listed here is limited to these entries and the admins.",
    )


class TerminalIdentity(BaseModel):
    """Who a terminal user is. By default the operating-system user, under their own login name."""

    users: dict[str, str] = Field(
        default_factory=dict,
        description="Operating-system user -> the Slack user id they act as (so their terminal "
        "commands meet the same access rules and decisions as in Slack).",
    )
    allow_acting_as: list[str] = Field(
        default_factory=list,
        description="Operating-system users who may run commands as someone else (`labmate say --user`); "
        "the audit row records both.",
    )


ParameterType = Literal["float", "int", "string", "path", "uri"]


class ParameterDeclaration(BaseModel):
    """One parameter of an entry point, as an MLproject file declares it."""

    type: ParameterType = Field("string", description="float, int, string, path or uri (MLflow's types).")
    default: str | int | float | None = Field(None, description="Its default; none means the parameter is required.")


class ProjectConfig(BaseModel):
    """One launchable MLflow Project (labmate.toml `[projects.<name>]`). Nothing else can be launched from chat."""

    uri: str = Field(
        description="Where the MLflow Project is: a local directory (relative to the working directory of the bot "
        "and the workers) or a git URI (`https://…/repo.git`, `git@…`, with `#subdirectory` if needed), which "
        "the worker that runs it fetches with MLflow Projects."
    )
    version: str | None = Field(None, description="For a git URI: the commit, branch or tag to run.")
    entry_points: list[str] = Field(
        default_factory=lambda: ["main"],
        description="The entry points that may be launched; the first is the default.",
        min_length=1,
    )
    experiment: str = Field(description="The MLflow experiment its runs log to (created if missing).")
    launchers: list[str] = Field(
        default_factory=lambda: ["*"],
        description="Who may launch it: `*` for anyone, or Slack user ids (U…), user group ids (S…) and "
        "channel ids (C…). Admins always may.",
    )
    max_sweep_size: int = Field(16, ge=1, description="The most runs one sweep may have.")
    max_parallel_runs: int = Field(2, ge=1, description="The most runs of one sweep that run at once (`parallel:N`).")
    time_limit: float = Field(
        3600.0, gt=0, description="Seconds a run may take; then it is stopped and marked KILLED."
    )
    progress_param: str = Field(
        "epochs", description="The parameter that says how many steps a run logs (the card's progress bar)."
    )
    on_worker_lost: Literal["fail", "retry"] = Field(
        "fail",
        description="When the worker running a launch dies: `fail` marks the launch and its MLflow run FAILED; "
        "`retry` starts it again in a new MLflow run (up to 3 attempts).",
    )
    parameters: dict[str, dict[str, ParameterDeclaration]] = Field(
        default_factory=dict,
        description="Per entry point, its parameters. Needed for a git URI (the bot has no copy of the "
        "MLproject to check values against); the worker checks they match the fetched MLproject. For a "
        "local directory they are read from its MLproject.",
    )

    @field_validator("entry_points")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _version_needs_git(self) -> ProjectConfig:
        if self.version is not None and not self.remote:
            raise ValueError("`version` is for a git URI; a local directory runs as it is")
        return self

    @property
    def remote(self) -> bool:
        """A git URI: only the worker that runs it has a copy."""
        return "://" in self.uri or self.uri.startswith("git@")

    def local_path(self) -> Path:
        directory, _, subdirectory = self.uri.partition("#")
        path = Path(directory).expanduser()
        return (path / subdirectory if subdirectory else path).resolve()


class RegressSuiteRules(BaseModel):
    """What a suite may run against from chat (labmate.toml `[regress.suites.<name>]`)."""

    model_config = ConfigDict(extra="forbid")

    allow_callables: bool = Field(
        False, description="Targets may be Python callables (`package.module:function`) for this suite."
    )
    allow_http: bool = Field(
        False, description="Targets may be HTTP endpoints for this suite (the worker calls the address named in chat)."
    )


class RegressConfig(BaseModel):
    """Regression runs from chat (labmate.toml `[regress]`)."""

    model_config = ConfigDict(extra="forbid")

    folders: list[str] = Field(
        default_factory=lambda: ["conversations"],
        description="Folders whose suite files may be run from chat (relative to the working directory); "
        "nothing outside them can be.",
        min_length=1,
    )
    workers: int = Field(2, ge=1, description="How many worker processes a run is split for when `workers:` isn't given.")
    max_workers: int = Field(8, ge=1, description="The most `workers:` a run may ask for.")
    promoters: list[str] = Field(
        default_factory=list,
        description="Who may press Promote (user, group or channel ids); admins always may. Empty: admins only.",
    )
    promote_alias: str = Field("production", description="The registered model alias that Promote moves to the candidate.")
    suites: dict[str, RegressSuiteRules] = Field(
        default_factory=dict, description="Per suite name, the target kinds allowed from chat besides MLflow models."
    )

RuleName = Literal["failed", "orphans", "scratch", "filters"]


class FilterRule(BaseModel):
    """A team's own clean-up rule: the runs an MLflow filter string matches, once they are old enough."""

    filter: str = Field(description="An MLflow search filter, e.g. `metrics.val_f1 < 0.5 and params.model = 'tiny'`.")
    days: float = Field(7.0, ge=0, description="Only runs that started at least this many days ago.")
    name: str = Field("", description="How the proposal names the rule (default: the filter itself).")


class CleanupRules(BaseModel):
    """Which runs of an experiment the clean-up proposes to delete, each rule with its threshold."""

    rules: list[RuleName] = Field(
        default_factory=lambda: ["failed", "orphans", "scratch", "filters"],
        description="The rules that apply: `failed` (FAILED/KILLED runs that logged no metric), `orphans` "
        "(RUNNING runs silent for `orphan_hours`), `scratch` (FINISHED runs of a scratch experiment), `filters`.",
    )
    failed_hours: float = Field(24.0, ge=0, description="`failed`: hours since a failed or killed run ended.")
    orphan_hours: float = Field(
        24.0, gt=0, description="`orphans`: hours a RUNNING run logged no new metric, parameter or tag; it is first "
        "marked FAILED with a note, then proposed.",
    )
    scratch: bool = Field(False, description="A scratch experiment: its finished runs are proposed too.")
    scratch_days: float = Field(14.0, ge=0, description="`scratch`: days since a finished run ended.")
    filters: list[FilterRule] = Field(default_factory=list, description="`filters`: the team's own rules.")
    top_k: int = Field(
        3, ge=0, description="The best runs by the experiment's primary metric that are never proposed."
    )


class CleanupConfig(BaseModel):
    """Stale-run clean-up (labmate.toml `[cleanup]`): where proposals go and the rules per experiment."""

    channel: str = Field("", description="Post every proposal in this channel (id); default: a DM to each owner.")
    owners: dict[str, str] = Field(
        default_factory=dict,
        description="MLflow user -> Slack user id, for the DMs (an MLflow user that already is a Slack id needs "
        "no entry). Proposals for owners with no Slack id go to `channel`, else to the first admin.",
    )
    grace_days: float = Field(
        7.0, ge=0, description="Days a deleted run can be restored (`restore <run>`); then it is removed for good."
    )
    snooze_days: float = Field(7.0, gt=0, description="Days a snoozed run is left out of proposals.")
    daily_at: str = Field(
        "07:05",
        pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$",
        description="When beat sends the day's proposals (HH:MM, UTC).",
    )
    gc_backend_store_uri: str = Field(
        "",
        description="For `mlflow gc` when MLFLOW_TRACKING_URI is an `mlflow server`: the server's database URI "
        "(gc works on the database; the artifacts are deleted through the server). Default: the tracking URI.",
    )
    defaults: CleanupRules = Field(default_factory=CleanupRules, description="Rules for every experiment.")
    experiments: dict[str, CleanupRules] = Field(
        default_factory=dict,
        description="Per experiment name, what differs from `defaults`. The daily job scans these experiments.",
    )

    def rules_for(self, experiment: str) -> CleanupRules:
        own = self.experiments.get(experiment)
        if own is None:
            return self.defaults
        return self.defaults.model_copy(update={name: getattr(own, name) for name in own.model_fields_set})


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


class DigestChannel(BaseModel):
    """One channel's daily digest (labmate.toml `[[digest.channels]]`)."""

    channel: str = Field(description="The channel id (`C0123ABCD`) or `#name` the digest is posted to.")
    at: str = Field("09:00", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="Local time of day (HH:MM) it is posted.")
    timezone: str = Field("UTC", description="The IANA time zone of `at`, e.g. `Europe/Paris`.")
    quiet: Literal["line", "none"] = Field(
        "line", description="A day with nothing to say: `line` posts one line, `none` posts nothing."
    )

    @model_validator(mode="after")
    def _known_zone(self) -> DigestChannel:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"[[digest.channels]] {self.channel}: unknown time zone {self.timezone!r}") from None
        return self


class DigestConfig(BaseModel):
    channels: list[DigestChannel] = Field(default_factory=list, description="Where and when the digest is posted.")


def _config_path() -> Path:
    return Path(os.environ.get("LABMATE_CONFIG", "labmate.toml"))


HOME_SHOWN_DEFAULT = "your user data directory: `~/.local/share/labmate` on Linux, `~/Library/Application Support/labmate` on macOS"


def default_home() -> Path:
    """A per-user data directory (platformdirs), not the working directory: the same command from
    another directory must find the same store."""
    from platformdirs import user_data_path

    return user_data_path("labmate", appauthor=False)


class ConfigError(Exception):
    """The configuration can't be read: one line naming the file (or variable), the line and what was expected."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=True)

    home: Path = Field(
        default_factory=default_home,
        validation_alias=_env("LABMATE_HOME"),
        description="Where embedded state lives: the SQLite knowledge base, the MLflow store, charts, shell history. "
        "The same store whatever directory you run labmate from.",
        json_schema_extra={"shown_default": HOME_SHOWN_DEFAULT},
    )
    database_url: str = Field(
        "",
        validation_alias=_env("LABMATE_DATABASE_URL"),
        description="SQLAlchemy URL of the knowledge base. Default: SQLite at $LABMATE_HOME/labmate.db.",
    )
    broker_url: str = Field(
        EMBEDDED_BROKER,
        validation_alias=_env("LABMATE_BROKER_URL"),
        description="Celery broker. Default `memory://`: a real worker runs inside the bot process. "
        "Set `redis://host:6379/0` to enqueue for `labmate worker` processes.",
    )
    result_backend: str = Field(
        "",
        validation_alias=_env("LABMATE_RESULT_BACKEND"),
        description="Celery result backend. Default: in-process for the embedded broker, the broker's Redis otherwise.",
    )
    broker_key_prefix: str = Field(
        "",
        validation_alias=_env("LABMATE_BROKER_KEY_PREFIX"),
        description="Prefix of every Redis key labmate's broker and results use, so several deployments "
        "(or test runs) can share one Redis.",
    )
    mlflow_tracking_uri: str = Field(
        "",
        validation_alias=_env("MLFLOW_TRACKING_URI"),
        description="MLflow tracking store. Default: SQLite at $LABMATE_HOME/mlflow.db with artifacts beside it.",
    )
    mlflow_ui_url: str = Field(
        "",
        validation_alias=_env("LABMATE_MLFLOW_UI_URL"),
        description="Base URL of the MLflow UI; when set, answers link runs and experiments to it.",
    )
    slack_bot_token: SecretStr | None = Field(
        None, validation_alias=_env("SLACK_BOT_TOKEN"), description="Bot token (xoxb-…) of the Slack app."
    )
    slack_signing_secret: SecretStr | None = Field(
        None,
        validation_alias=_env("SLACK_SIGNING_SECRET"),
        description="Signing secret; every HTTP request from Slack is verified with it.",
    )
    slack_app_token: SecretStr | None = Field(
        None, validation_alias=_env("SLACK_APP_TOKEN"), description="App-level token (xapp-…) for Socket Mode."
    )
    slack_api_url: str = Field(
        "https://slack.com/api/",
        validation_alias=_env("LABMATE_SLACK_API_URL"),
        description="Base URL of the Slack Web API (tests point it at the fake Slack server).",
    )
    command: str = Field(
        "/lab", validation_alias=_env("LABMATE_COMMAND"), description="The slash command labmate answers to."
    )
    decision_emoji: str = Field(
        "memo",
        validation_alias=_env("LABMATE_DECISION_EMOJI"),
        description="Reacting to a message with this emoji (name without colons) logs it as a decision.",
    )
    job_timeout: float = Field(
        120.0,
        validation_alias=_env("LABMATE_JOB_TIMEOUT"),
        description="How long `labmate say` waits for a job's replies before giving up.",
    )
    primary_metrics: dict[str, str] = Field(
        default_factory=dict,
        description="Per experiment name, the metric that ranks its runs (labmate.toml `[primary_metrics]`).",
    )
    metric_directions: dict[str, str] = Field(
        default_factory=dict,
        description="Per metric name, `lower` or `higher` is better (labmate.toml `[metric_directions]`); "
        "beats the name rule, loses to the experiment's tag `labmate.direction.<metric>` and to `asc`/`desc`.",
    )
    access: AccessRules = Field(default_factory=AccessRules, description="labmate.toml `[access]`.")
    projects: dict[str, ProjectConfig] = Field(
        default_factory=default_projects,
        description="labmate.toml `[projects.<name>]`: the MLflow Projects that may be launched from chat, "
        "who may launch them and their limits. Default: the demo's `sales-agent` (replaced when you "
        "configure your own).",
    )
    regress: RegressConfig = Field(
        default_factory=RegressConfig,
        description="labmate.toml `[regress]`: the suites folders chat may run, `workers:` default and limit, who "
        "may promote and the alias Promote moves, targets allowed per suite (docs/regression-suites.md).",
    )
    launch_progress_every: float = Field(
        2.0,
        gt=0,
        validation_alias=_env("LABMATE_LAUNCH_PROGRESS_EVERY"),
        description="Seconds between two reads of a running launch's progress from MLflow (its card is "
        "edited at most that often, and never more than once per 2 s).",
    )
    cleanup: CleanupConfig = Field(
        default_factory=CleanupConfig,
        description="labmate.toml `[cleanup]`: the stale-run clean-up: where proposals go, the grace period, the "
        "rules per experiment (docs/cleanup.md).",
    )
    terminal: TerminalIdentity = Field(default_factory=TerminalIdentity, description="labmate.toml `[terminal]`.")
    database_connect_timeout: float = Field(
        2.0,
        validation_alias=_env("LABMATE_DATABASE_CONNECT_TIMEOUT"),
        description="Seconds to wait for a new PostgreSQL connection (libpq's minimum is 2).",
    )
    database_io_timeout: float = Field(
        1.0,
        validation_alias=_env("LABMATE_DATABASE_IO_TIMEOUT"),
        description="Seconds a PostgreSQL connection may leave data unacknowledged before it counts as dead "
        "(a black-holed network fails a command in seconds instead of hanging it).",
    )
    database_statement_timeout: float = Field(
        10.0,
        validation_alias=_env("LABMATE_DATABASE_STATEMENT_TIMEOUT"),
        description="Seconds one PostgreSQL statement may run, lock waits included.",
    )
    slack_timeout: float = Field(
        10.0,
        validation_alias=_env("LABMATE_SLACK_TIMEOUT"),
        description="Seconds to wait for one Slack Web API call before counting it as failed (it is retried).",
    )
    delivery_backoff: float = Field(
        2.0,
        validation_alias=_env("LABMATE_DELIVERY_BACKOFF"),
        description="Seconds before a refused reply (or an unreachable database) is tried again; doubles "
        "with each try, up to five minutes, and never sooner than Slack's Retry-After.",
    )
    job_stale_after: float = Field(
        20.0,
        validation_alias=_env("LABMATE_JOB_STALE_AFTER"),
        description="A running job whose heartbeat is this many seconds old belongs to a dead worker: "
        "the reaper hands it to another.",
    )
    worker_preload: bool = Field(
        True,
        validation_alias=_env("LABMATE_WORKER_PRELOAD"),
        description="`labmate worker` imports MLflow and matplotlib before it forks its pool, so the first "
        "question after a start doesn't wait for them and the pool's processes share their memory. Off, a "
        "worker is ready seconds sooner and each pool process imports them on its first job that needs them.",
    )
    reap_every: float = Field(
        15.0,
        validation_alias=_env("LABMATE_REAP_EVERY"),
        description="How often (seconds) beat runs the reaper that sends stored jobs and rescues the jobs "
        "of dead workers.",
    )
    watch_every: float = Field(
        60.0,
        gt=0,
        validation_alias=_env("LABMATE_WATCH_EVERY"),
        description="How often (seconds) beat polls the watched experiments for ended runs and checks which "
        "digests are due.",
    )
    watch_group_over: int = Field(
        5,
        ge=1,
        description="More runs than this ending in one watched experiment within one poll (a minute) are "
        "announced in one grouped message instead of one notice each (labmate.toml).",
    )
    digest: DigestConfig = Field(
        default_factory=DigestConfig,
        description="labmate.toml `[[digest.channels]]`: per channel, the local time `at` (HH:MM), its `timezone` "
        "and `quiet` (`line` or `none`) of the daily digest. None by default.",
    )
    delivery_retries: int = Field(
        8,
        validation_alias=_env("LABMATE_DELIVERY_RETRIES"),
        description="How many times a reply Slack refused for a while (429, 5xx, timeouts) is retried, with "
        "exponential backoff, before its command is marked `undelivered`.",
    )

    @model_validator(mode="after")
    def _directions_are_known(self) -> Settings:
        allowed = ("lower", "higher", "asc", "desc", "min", "max")
        for metric, value in self.metric_directions.items():
            if value.strip().lower() not in allowed:
                raise ValueError(
                    f"[metric_directions] {metric} = {value!r}: say \"lower\" or \"higher\" (or asc, desc, min, max)"
                )
        return self

    @model_validator(mode="after")
    def _embedded_defaults(self) -> Settings:
        self.command = "/" + self.command.lstrip("/")
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.home / 'labmate.db').resolve()}"
        if not self.mlflow_tracking_uri:
            self.mlflow_tracking_uri = f"sqlite:///{(self.home / 'mlflow.db').resolve()}"
        if not self.slack_api_url.endswith("/"):
            self.slack_api_url += "/"
        return self

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, (mask_url(value) if isinstance(value, str) and name in URL_FIELDS else value)

    @property
    def embedded_broker(self) -> bool:
        return self.broker_url == EMBEDDED_BROKER

    @property
    def mlflow_artifact_root(self) -> Path:
        return (self.home / "mlartifacts").resolve()

    @property
    def charts_dir(self) -> Path:
        return (self.home / "charts").resolve()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_config_path())
        return (init_settings, env_settings, toml)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    import tomllib

    from pydantic import ValidationError

    try:
        return Settings()
    except tomllib.TOMLDecodeError as exc:
        from labmate.config_errors import toml_syntax_message

        raise ConfigError(toml_syntax_message(_config_path(), exc)) from None
    except ValidationError as exc:
        from labmate.config_errors import validation_message

        raise ConfigError(validation_message(exc, _config_path())) from None


def reset_settings() -> None:
    get_settings.cache_clear()


def settings_env_names() -> set[str]:
    """Every environment variable name the settings class reads (the compose file test checks against it)."""
    names: set[str] = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices if str(choice).isupper())
    return names


def describe() -> list[dict[str, Any]]:
    """Name, default and description of each setting, for the configuration reference."""
    rows = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        env = next((str(c) for c in alias.choices if str(c).isupper()), "") if isinstance(alias, AliasChoices) else ""
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        default = None if extra.get("shown_default") else field.get_default(call_default_factory=True)
        rows.append(
            {
                "field": name,
                "env": env,
                "default": default,
                "shown_default": extra.get("shown_default", ""),
                "description": field.description or "",
            }
        )
    return rows
