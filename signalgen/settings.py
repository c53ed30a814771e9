"""One typed view of the environment. Read once per process through `get_settings()`.

Variable names follow the original architecture (FINNHUB_API_KEY, WATCHLIST_CONFIG_PATH,
MOCK_GENERATOR_INTERVAL_SECONDS, GOLDEN_CROSS_CHECK_INTERVAL_SECONDS, LOG_LEVEL) plus the URLs
of the broker, the database and Redis. Nothing set at all is a valid configuration: the embedded
default (SQLite file, local Redis) used by `signalgen dev`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from signalgen.paths import CONFIG_DIR, PROJECT_ROOT

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: Broker schemes that are not Redis: with one of these, REDIS_URL must be set (no silent default).
AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://", "librabbitmq://")
_PLACEHOLDER_SECRETS = {"changeme", "change-me", "changethis", "your_api_key", "xxx", "secret"}


def default_database_url() -> str:
    return f"sqlite:///{PROJECT_ROOT / '.signalgen' / 'signalgen.db'}"


class Settings(BaseSettings):
    """Environment configuration. Unknown SIGNALGEN_* variables are ignored, bad values refused."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    broker_url: str = Field(default=DEFAULT_REDIS_URL, validation_alias="BROKER_URL")
    database_url: str = Field(default_factory=default_database_url, validation_alias="DATABASE_URL")
    redis_url: str | None = Field(default=None, validation_alias="REDIS_URL")

    finnhub_api_key: SecretStr | None = Field(default=None, validation_alias="FINNHUB_API_KEY")
    finnhub_base_url: str = Field(
        default="https://finnhub.io/api/v1", validation_alias="FINNHUB_BASE_URL"
    )
    finnhub_calls_per_minute: int = Field(
        default=60, ge=1, validation_alias="FINNHUB_CALLS_PER_MINUTE"
    )
    finnhub_calls_per_second: int = Field(
        default=30, ge=1, validation_alias="FINNHUB_CALLS_PER_SECOND"
    )
    finnhub_timeout_seconds: float = Field(
        default=10.0, gt=0, validation_alias="FINNHUB_TIMEOUT_SECONDS"
    )
    #: The exchange whose sessions gate quote calls and date daily bars (exchange_calendars name).
    market_calendar: str = Field(default="XNYS", min_length=1, validation_alias="MARKET_CALENDAR")
    #: Wall-time bound of one refresh of a generator's bars (every provider call, retries and
    #: waits for a rate-limit slot included): what a check may spend on a slow or dead provider.
    market_data_budget_seconds: float = Field(
        default=8.0, gt=0, le=300, validation_alias="MARKET_DATA_BUDGET_SECONDS"
    )
    #: Consecutive transport failures (timeouts, refused connections, 5xx) that open the circuit.
    provider_breaker_failures: int = Field(
        default=3, ge=1, validation_alias="PROVIDER_BREAKER_FAILURES"
    )
    #: How long an open circuit refuses calls before one probe is let through.
    provider_breaker_cooldown_seconds: float = Field(
        default=60.0, gt=0, validation_alias="PROVIDER_BREAKER_COOLDOWN_SECONDS"
    )
    #: First pause after a ticker returned no data; doubled on each empty answer, up to the max.
    provider_no_data_retry_seconds: float = Field(
        default=3600.0, gt=0, validation_alias="PROVIDER_NO_DATA_RETRY_SECONDS"
    )
    provider_no_data_retry_max_seconds: float = Field(
        default=86400.0, gt=0, validation_alias="PROVIDER_NO_DATA_RETRY_MAX_SECONDS"
    )
    #: Where backfill gets daily history (docs/marketdata.md#history-sources): stooq (free, no
    #: key), tiingo, alphavantage (free keys), finnhub (candles, paid plans), csv (files).
    history_source: Literal["stooq", "tiingo", "alphavantage", "finnhub", "csv"] = Field(
        default="stooq", validation_alias="HISTORY_SOURCE"
    )
    stooq_base_url: str = Field(default="https://stooq.com", validation_alias="STOOQ_BASE_URL")
    tiingo_api_key: SecretStr | None = Field(default=None, validation_alias="TIINGO_API_KEY")
    tiingo_base_url: str = Field(
        default="https://api.tiingo.com", validation_alias="TIINGO_BASE_URL"
    )
    alphavantage_api_key: SecretStr | None = Field(
        default=None, validation_alias="ALPHAVANTAGE_API_KEY"
    )
    alphavantage_base_url: str = Field(
        default="https://www.alphavantage.co", validation_alias="ALPHAVANTAGE_BASE_URL"
    )
    #: The `csv` history source's directory of `<TICKER>.csv` files.
    history_csv_dir: Path | None = Field(default=None, validation_alias="HISTORY_CSV_DIR")

    watchlist_config_path: Path = Field(
        default=CONFIG_DIR / "watchlist.json", validation_alias="WATCHLIST_CONFIG_PATH"
    )
    generators_config_path: Path = Field(
        default=CONFIG_DIR / "generators.json", validation_alias="GENERATORS_CONFIG_PATH"
    )
    mock_generator_interval_seconds: int | None = Field(
        default=None, gt=0, validation_alias="MOCK_GENERATOR_INTERVAL_SECONDS"
    )
    golden_cross_check_interval_seconds: int | None = Field(
        default=None, gt=0, validation_alias="GOLDEN_CROSS_CHECK_INTERVAL_SECONDS"
    )
    #: Overrides `enabled` of every `mock` generator (None: as the file says, which ships it off).
    #: `signalgen dev` sets it on, with SIGNALGEN_DEV: enabled elsewhere, start-up warns.
    mock_generator_enabled: bool | None = Field(
        default=None, validation_alias="MOCK_GENERATOR_ENABLED"
    )
    signalgen_dev: bool = Field(default=False, validation_alias="SIGNALGEN_DEV")

    #: Networks webhook executors may reach although private/loopback/reserved (comma-separated
    #: CIDRs, e.g. `127.0.0.1/32`). Empty (the default): only public addresses.
    webhook_allow_networks: str = Field(default="", validation_alias="WEBHOOK_ALLOW_NETWORKS")
    #: Fernet keys (comma-separated, newest first) that encrypt webhook executor secrets at rest.
    #: The first encrypts; every one decrypts (rotation). Unset: a key kept in `.signalgen/`.
    secrets_keys: SecretStr | None = Field(default=None, validation_alias="SECRETS_KEYS")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", validation_alias="LOG_LEVEL"
    )
    #: `auto`: text on a terminal, JSON otherwise (`signalgen.logs.resolve_format`).
    log_format: Literal["json", "text", "auto"] = Field(
        default="auto", validation_alias="LOG_FORMAT"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("webhook_allow_networks")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        from dispatcher.egress import parse_networks

        parse_networks(value)  # a bad entry stops start-up, named
        return value

    @field_validator("history_source", mode="before")
    @classmethod
    def _lower_source(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("tiingo_api_key", "alphavantage_api_key")
    @classmethod
    def _blank_key_unset(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None
        return value

    @field_validator("finnhub_api_key")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip().lower() in _PLACEHOLDER_SECRETS:
            raise ValueError("FINNHUB_API_KEY is a placeholder; set a real key or unset it")
        if value is not None and not value.get_secret_value().strip():
            return None
        return value

    @field_validator("watchlist_config_path", "generators_config_path")
    @classmethod
    def _resolve_config_path(cls, value: Path) -> Path:
        """Relative paths are taken from the working directory, then from the project root."""
        if value.is_absolute() or value.exists():
            return value
        candidate = PROJECT_ROOT / value
        return candidate if candidate.exists() else value

    @model_validator(mode="after")
    def _redis_beside_amqp(self) -> Settings:
        if self.broker_url.startswith(AMQP_SCHEMES) and not self.redis_url:
            raise ValueError(
                "REDIS_URL must be set when BROKER_URL is RabbitMQ (amqp://): the shared Finnhub "
                "limiter, index versions, rate limits and beat's send-once markers live in "
                "Redis; set REDIS_URL=redis://HOST:6379/1"
            )
        return self

    @property
    def effective_redis_url(self) -> str:
        """Redis for the shared rate limiter, counters and index versions: REDIS_URL, else the
        broker if it is Redis, else (an in-memory test broker) the local default. With a
        RabbitMQ broker REDIS_URL is required (`_redis_beside_amqp`)."""
        if self.redis_url:
            return self.redis_url
        if self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return DEFAULT_REDIS_URL


@functools.cache
def get_settings() -> Settings:
    return Settings()
