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

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
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
    launch_progress_every: float = Field(
        2.0,
        gt=0,
        validation_alias=_env("LABMATE_LAUNCH_PROGRESS_EVERY"),
        description="Seconds between two reads of a running launch's progress from MLflow (its card is "
        "edited at most that often, and never more than once per 2 s).",
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
