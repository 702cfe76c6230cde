"""The one settings class: environment variables, then an optional `labmate.toml`, then defaults.

Read once per process through `get_settings()`; tests call `reset_settings()` after changing
the environment.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

EMBEDDED_BROKER = "memory://"


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower().removeprefix("labmate_"))


class AccessRules(BaseModel):
    """Who may use what. Entries are Slack user ids (U…/W…), user group ids (S…) or channel ids (C…/G…/D…)."""

    admins: list[str] = Field(default_factory=list, description="Users allowed every verb, including admin-only ones.")
    verbs: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Per verb, who may use it. A verb listed here is limited to these entries and the admins.",
    )


def _config_path() -> Path:
    return Path(os.environ.get("LABMATE_CONFIG", "labmate.toml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=True)

    home: Path = Field(
        Path(".labmate"),
        validation_alias=_env("LABMATE_HOME"),
        description="Where embedded state lives: the SQLite knowledge base, the MLflow store, charts, shell history.",
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
    return Settings()


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
        default = field.get_default(call_default_factory=True)
        rows.append({"field": name, "env": env, "default": default, "description": field.description or ""})
    return rows
