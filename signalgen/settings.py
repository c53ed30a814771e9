"""One typed view of the environment: `Settings` declares every variable the service reads.

Read once per process through `get_settings()` (`reset_settings()` makes the next call read the
environment again, for tests that change it). Nothing set at all is a valid configuration: the
embedded default (SQLite file, local Redis) used by `signalgen dev`. The durations the
dispatcher and the repair sweep compute with are also there as `timedelta` properties
(`execution_lease`, `repair_grace`, ...).

The README's configuration table and docs/configuration.md are generated from this class:
`python -m signalgen.settings --write` rewrites them, `--markdown` prints the full table
(tests/unit/test_settings_docs.py checks that they match).
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin, overload

import annotated_types
from pydantic import (
    Field,
    SecretStr,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUseDefault
from pydantic_settings import BaseSettings, SettingsConfigDict

from signalgen.paths import CONFIG_DIR, PROJECT_ROOT

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: Broker schemes that are not Redis: with one of these, REDIS_URL must be set (no silent default).
AMQP_SCHEMES = ("amqp://", "amqps://", "pyamqp://", "librabbitmq://")
_PLACEHOLDER_SECRETS = {"changeme", "change-me", "changethis", "your_api_key", "xxx", "secret"}
#: The words the beat switches (BEAT_LOCK, BEAT_SEND_ONCE) understand; any other value leaves
#: the switch at its default, as these variables were always read.
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


def default_database_url() -> str:
    return f"sqlite:///{PROJECT_ROOT / '.signalgen' / 'signalgen.storage'}"


def _doc(*, default: str | None = None, main: bool = False) -> dict[str, Any]:
    """Documentation-only attributes of a field: `default` as the docs show it (when the value
    itself is not telling), `main` for the README's short table."""
    extra: dict[str, Any] = {"main": main}
    if default is not None:
        extra["shown_default"] = default
    return extra


def _var(
    name: str, default: Any, *, main: bool = False, shown: str | None = None, **constraints: Any
) -> Any:
    """A field read from the variable `name`, with its default; `main` and `shown` as `_doc`
    takes them, `constraints` (gt, ge, ...) as `Field` does. The field's description is the
    docstring under it (`use_attribute_docstrings`)."""
    return Field(
        default,
        validation_alias=name,
        json_schema_extra=_doc(main=main, default=shown),
        **constraints,
    )


class _Duration:
    """A read-only `Settings` attribute: the seconds field `field` as a `timedelta`."""

    def __init__(self, field: str) -> None:
        self.field = field

    @overload
    def __get__(self, settings: None, owner: object = None) -> _Duration: ...
    @overload
    def __get__(self, settings: Settings, owner: object = None) -> timedelta: ...
    def __get__(self, settings: Settings | None, owner: object = None) -> timedelta | _Duration:
        if settings is None:  # on the class: the descriptor itself
            return self
        return timedelta(seconds=getattr(settings, self.field))


class Settings(BaseSettings):
    """Environment configuration. Unknown variables are ignored, bad values refused.

    Each field is one variable (`validation_alias`, the field name in upper case) with its type,
    default and a docstring, its one-line description: the docs table is generated from them.
    """

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        ignored_types=(_Duration,),
        use_attribute_docstrings=True,
    )

    # Connections
    broker_url: str = _var(
        "BROKER_URL",
        DEFAULT_REDIS_URL,
        main=True,
        shown="`redis://127.0.0.1:6379/0`; embedded under `signalgen dev`",
    )
    """Celery/Kombu broker, `redis://…` or `amqp://…`"""
    database_url: str = Field(
        default_factory=default_database_url,
        validation_alias="DATABASE_URL",
        json_schema_extra=_doc(main=True, default="SQLite file `.signalgen/signalgen.storage`"),
    )
    """SQLAlchemy URL, `postgresql://…`"""
    redis_url: str | None = _var(
        "REDIS_URL",
        None,
        main=True,
        shown="the broker, if it is Redis; **required** with an `amqp://` broker",
    )
    """Redis for the shared Finnhub limiter, index versions, rate limits, beat's send-once
    markers"""

    # Market data
    finnhub_api_key: SecretStr | None = _var("FINNHUB_API_KEY", None, main=True)
    """Finnhub key; unset: bars come from imports only (placeholders refused)"""
    finnhub_base_url: str = _var("FINNHUB_BASE_URL", "https://finnhub.io/api/v1")
    """Finnhub API base"""
    finnhub_calls_per_minute: int = _var("FINNHUB_CALLS_PER_MINUTE", 60, main=True, ge=1)
    """Finnhub calls per minute, one limit shared by every worker"""
    finnhub_calls_per_second: int = _var("FINNHUB_CALLS_PER_SECOND", 30, ge=1)
    """Finnhub calls per second, one limit shared by every worker"""
    finnhub_timeout_seconds: float = _var("FINNHUB_TIMEOUT_SECONDS", 10.0, gt=0)
    """timeout of one Finnhub HTTP call"""
    market_calendar: str = _var("MARKET_CALENDAR", "XNYS", min_length=1)
    """exchange calendar (exchange_calendars name, or `24/7`) gating quote calls and dating daily
    bars"""
    market_data_budget_seconds: float = _var("MARKET_DATA_BUDGET_SECONDS", 8.0, gt=0, le=300)
    """wall-time bound of one refresh of a generator's bars (every provider call, retry and wait for
    a rate-limit slot included)"""
    provider_breaker_failures: int = _var("PROVIDER_BREAKER_FAILURES", 3, ge=1)
    """consecutive transport failures (timeouts, refused connections, 5xx) that open the provider's
    shared circuit"""
    provider_breaker_cooldown_seconds: float = _var("PROVIDER_BREAKER_COOLDOWN_SECONDS", 60.0, gt=0)
    """how long an open circuit refuses calls before one probe is let through"""
    provider_no_data_retry_seconds: float = _var("PROVIDER_NO_DATA_RETRY_SECONDS", 3600.0, gt=0)
    """first pause after a ticker returned no data; doubled on each empty answer"""
    provider_no_data_retry_max_seconds: float = _var(
        "PROVIDER_NO_DATA_RETRY_MAX_SECONDS", 86400.0, gt=0
    )
    """longest pause for a ticker without data"""
    history_source: Literal["stooq", "tiingo", "alphavantage", "finnhub", "csv"] = _var(
        "HISTORY_SOURCE", "stooq", main=True
    )
    """where backfill gets daily history; set explicitly, workers backfill at start"""
    stooq_base_url: str = _var("STOOQ_BASE_URL", "https://stooq.com")
    """Stooq base"""
    tiingo_api_key: SecretStr | None = _var("TIINGO_API_KEY", None)
    """Tiingo key (free)"""
    tiingo_base_url: str = _var("TIINGO_BASE_URL", "https://api.tiingo.com")
    """Tiingo base"""
    alphavantage_api_key: SecretStr | None = _var("ALPHAVANTAGE_API_KEY", None)
    """Alpha Vantage key (free)"""
    alphavantage_base_url: str = _var("ALPHAVANTAGE_BASE_URL", "https://www.alphavantage.co")
    """Alpha Vantage base"""
    history_csv_dir: Path | None = _var("HISTORY_CSV_DIR", None)
    """the `csv` history source's directory of `<TICKER>.csv` files"""

    # Configuration files and generators
    watchlist_config_path: Path = _var(
        "WATCHLIST_CONFIG_PATH", CONFIG_DIR / "watchlist.json", main=True
    )
    """watchlist (the original's format)"""
    generators_config_path: Path = _var(
        "GENERATORS_CONFIG_PATH", CONFIG_DIR / "generators.json", main=True
    )
    """generator instances, intervals, settings"""
    operations_config_path: Path = _var(
        "OPERATIONS_CONFIG_PATH", CONFIG_DIR / "operations.json", main=True
    )
    """budgets, owner limits, `quotas`, `executors.celery_tasks` (missing: defaults)"""
    webhooks_config_path: Path = _var(
        "WEBHOOKS_CONFIG_PATH", CONFIG_DIR / "webhooks.json", main=True
    )
    """webhook sources, body depth, event-time bounds (missing: no sources)"""
    mock_generator_interval_seconds: int | None = _var(
        "MOCK_GENERATOR_INTERVAL_SECONDS", None, main=True, shown="from the file", gt=0
    )
    """overrides every `mock` generator's interval"""
    golden_cross_check_interval_seconds: int | None = _var(
        "GOLDEN_CROSS_CHECK_INTERVAL_SECONDS", None, main=True, shown="from the file", gt=0
    )
    """overrides every `golden_cross` generator's interval"""
    mock_generator_enabled: bool | None = _var(
        "MOCK_GENERATOR_ENABLED", None, shown="file (off); `1` under `signalgen dev`"
    )
    """turns `mock` generators on/off over the file (on outside dev logs a warning; pipelines still
    opt in with `include_mock`)"""
    signalgen_dev: bool = _var("SIGNALGEN_DEV", False)
    """set by `signalgen dev` for its processes (mock generators expected)"""

    # Beat
    beat_lock: bool = _var("BEAT_LOCK", False, main=True)
    """hot-standby beat: only the lock holder sends"""
    beat_lock_ttl_seconds: float = _var("BEAT_LOCK_TTL_SECONDS", 30.0, gt=0)
    """TTL of the beat lock (renewed every third of it): the standby's takeover"""
    beat_send_once: bool = _var("BEAT_SEND_ONCE", True)
    """a Redis marker per schedule slot: each slot sent once across beats, restarts"""

    # Dispatcher
    execution_lease_seconds: float = _var("EXECUTION_LEASE_SECONDS", 900.0, gt=0)
    """a `running` execution older than this is presumed dead and taken over (keep it above webhook
    timeout x attempts + back-off)"""
    claimed_grace_seconds: float = _var("CLAIMED_GRACE_SECONDS", 60.0, gt=0)
    """a claim still `claimed` after this is re-enqueued by the periodic sweep"""
    intake_batch_max: int = _var(
        "INTAKE_BATCH_MAX", 16, ge=1, le=256
    )  # dispatcher.batching.MAX_BATCH
    """most raw signals one dispatch takes at once when a worker's pool is busy (claims in one
    statement, one task); `1`: always one by one"""
    pipeline_index_check_seconds: float = _var("PIPELINE_INDEX_CHECK_SECONDS", 1.0, gt=0)
    """how often (at most) a worker reads the pipelines version (writes patched in)"""
    pipeline_index_max_age_seconds: float = _var("PIPELINE_INDEX_MAX_AGE_SECONDS", 60.0, gt=0)
    """how often a worker checks its index against the database (bound for a lost version bump)"""

    # Repair
    repair_interval_seconds: float = _var("REPAIR_INTERVAL_SECONDS", 60.0, gt=0)
    """beat interval of `signals.repair`"""
    repair_grace_seconds: float = _var("REPAIR_GRACE_SECONDS", 300.0, gt=0)
    """a signal published, or an execution enqueued, this long ago and untouched is sent again"""
    repair_horizon_seconds: float = _var("REPAIR_HORIZON_SECONDS", 86400.0, gt=0)
    """signals recorded longer ago than this are left to an operator's replay"""
    outbox_sweep_age_seconds: float = _var("OUTBOX_SWEEP_AGE_SECONDS", 30.0, gt=0)
    """age at which the outbox sweep takes over an unpublished signal"""
    repair_batch: int = _var("REPAIR_BATCH", 500, gt=0)
    """most signals, and most executions, one repair sweep re-sends"""
    repair_max_backlog: int = _var("REPAIR_MAX_BACKLOG", 100, ge=0)
    """repair re-sends nothing while the queues concerned hold more messages"""

    # Security
    webhook_allow_networks: str = _var(
        "WEBHOOK_ALLOW_NETWORKS",
        "",
        main=True,
        shown="empty: public addresses only; `127.0.0.1/32,::1/128` under `signalgen dev`",
    )
    """comma-separated CIDRs webhook executors may reach although private/loopback/reserved (a
    metadata address only by its exact /32); a bad entry stops start-up"""
    secrets_keys: SecretStr | None = _var(
        "SECRETS_KEYS",
        None,
        main=True,
        shown="SQLite: a key made in `.signalgen/`; PostgreSQL: webhook writes refused",
    )
    """Fernet keys, newest first, encrypting webhook secrets at rest (first encrypts, all decrypt;
    `signalgen secrets rotate`)"""

    # HTTP API
    api_rate_limit: int = _var("API_RATE_LIMIT", 600, ge=1)
    """HTTP API requests per key per window"""
    api_rate_window_seconds: int = _var("API_RATE_WINDOW_SECONDS", 60, ge=1, le=3600)
    """the window of `API_RATE_LIMIT`"""
    api_key_cache_seconds: float = _var("API_KEY_CACHE_SECONDS", 1.0, ge=0, le=1)
    """how long an authenticated key is trusted without a lookup (a revoked key works at most this
    long; `0`: revocation immediate)"""
    auth_failures_per_address: int = _var("AUTH_FAILURES_PER_ADDRESS", 20, ge=0, le=1_000_000)
    """failed logins (API keys, webhook secrets) per client address per window before 429
    (`0`: off)"""
    auth_failures_per_key: int = _var("AUTH_FAILURES_PER_KEY", 20, ge=0, le=1_000_000)
    """failed logins per key bucket (an API key's first 10 characters; a webhook source) per window
    before 429 (`0`: off)"""
    auth_failure_window_seconds: int = _var("AUTH_FAILURE_WINDOW_SECONDS", 60, ge=1, le=86_400)
    """the window of the failed-login counts; past a limit, 429 until it ends"""

    # Logs
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = _var(
        "LOG_LEVEL", "INFO", main=True
    )
    """log level (`DEBUG` also shows start-up tracebacks)"""
    log_format: Literal["json", "text", "auto"] = _var(
        "LOG_FORMAT", "auto", main=True, shown="`auto`: text on a terminal, JSON otherwise"
    )
    """log format"""

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("webhook_allow_networks")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        from signalgen.networks import parse_networks

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

    @field_validator("operations_config_path", "webhooks_config_path", mode="before")
    @classmethod
    def _blank_path_default(cls, value: object) -> object:
        if isinstance(value, str) and not value:
            raise PydanticUseDefault()
        return value

    @field_validator("beat_lock", "beat_send_once", mode="wrap")
    @classmethod
    def _switch(
        cls, value: object, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> bool:
        """A word of `_ON` or `_OFF`; any other text leaves the switch at its default."""
        if isinstance(value, str):
            word = value.strip().lower()
            if word in _ON:
                return True
            if word in _OFF:
                return False
            return bool(cls.model_fields[str(info.field_name)].default)
        return bool(handler(value))

    @model_validator(mode="after")
    def _redis_beside_amqp(self) -> Settings:
        if self.broker_url.startswith(AMQP_SCHEMES) and not self.redis_url:
            raise ValueError(
                "REDIS_URL must be set when BROKER_URL is RabbitMQ (amqp://): the shared Finnhub "
                "limiter, index versions, rate limits and beat's send-once markers live in "
                "Redis; set REDIS_URL=redis://HOST:6379/1"
            )
        return self

    # Seconds as durations, for the code that computes with datetimes
    execution_lease = _Duration("execution_lease_seconds")
    claimed_grace = _Duration("claimed_grace_seconds")
    repair_grace = _Duration("repair_grace_seconds")
    repair_horizon = _Duration("repair_horizon_seconds")
    outbox_sweep_age = _Duration("outbox_sweep_age_seconds")

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


# A docstring wrapped over lines is one line of description (a cell of the docs table).
for _field in Settings.model_fields.values():
    _field.description = " ".join((_field.description or "").split())


@functools.cache
def get_settings() -> Settings:
    """This process's settings, read from the environment (and `.env`) on first use."""
    return Settings()


def reset_settings() -> None:
    """Forget the cached settings: the next `get_settings()` reads the environment again (tests
    that change it; same as `get_settings.cache_clear()`)."""
    get_settings.cache_clear()


def variable_names() -> tuple[str, ...]:
    """Every environment variable `Settings` reads, in declaration order."""
    return tuple(_variable(info) for info in Settings.model_fields.values())


def _variable(info: FieldInfo) -> str:
    alias = info.validation_alias
    if not isinstance(alias, str):
        raise TypeError(f"every Settings field names its variable in validation_alias: {info}")
    return alias


# The docs, generated

README = PROJECT_ROOT / "README.md"
CONFIGURATION_DOC = PROJECT_ROOT / "docs" / "configuration.md"
README_START = "<!-- settings table: generated by `python -m signalgen.settings --write` -->"
README_END = "<!-- end of settings table -->"

_TYPE_NAMES: dict[Any, str] = {
    str: "text",
    int: "integer",
    float: "number",
    bool: "switch",
    Path: "path",
    SecretStr: "secret",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _type_text(info: FieldInfo) -> str:
    annotation = info.annotation
    if get_origin(annotation) in (Union, UnionType):
        members = [a for a in get_args(annotation) if a is not NoneType]
        annotation = members[0] if len(members) == 1 else annotation
    if get_origin(annotation) is Literal:
        text = "one of " + ", ".join(f"`{v}`" for v in get_args(annotation))
    else:
        text = _TYPE_NAMES.get(annotation, str(annotation))
    bounds = []
    for item in info.metadata:
        if isinstance(item, annotated_types.Gt):
            bounds.append(f"> {_number(item.gt)}")
        elif isinstance(item, annotated_types.Ge):
            bounds.append(f"≥ {_number(item.ge)}")
        elif isinstance(item, annotated_types.Lt):
            bounds.append(f"< {_number(item.lt)}")
        elif isinstance(item, annotated_types.Le):
            bounds.append(f"≤ {_number(item.le)}")
        elif isinstance(item, annotated_types.MinLen) and item.min_length == 1:
            bounds.append("not empty")
    return f"{text} {', '.join(bounds)}" if bounds else text


def _extra(info: FieldInfo) -> Mapping[str, Any]:
    extra = info.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def _default_text(info: FieldInfo) -> str:
    shown = _extra(info).get("shown_default")
    if shown is not None:
        return str(shown)
    if info.default_factory is not None:
        raise TypeError(f"{_variable(info)}: a computed default needs `_doc(default=...)`")
    value = info.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, Path):
        shown_path = (
            value.relative_to(PROJECT_ROOT) if value.is_relative_to(PROJECT_ROOT) else value
        )
        return f"`{shown_path.as_posix()}`"
    if value == "":
        return "empty"
    return f"`{_number(value)}`"


def markdown_table(*, main_only: bool = False) -> str:
    """The variables as a Markdown table (Variable, Type, Default, Meaning), in declaration
    order; `main_only`: those marked for the README."""
    lines = ["| Variable | Type | Default | Meaning |", "|---|---|---|---|"]
    for info in Settings.model_fields.values():
        if main_only and not _extra(info).get("main"):
            continue
        cells = (
            f"`{_variable(info)}`",
            _type_text(info),
            _default_text(info),
            info.description or "",
        )
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def readme_section() -> str:
    """What stands between README_START and README_END in README.md."""
    return (
        f"{README_START}\n{markdown_table(main_only=True)}\n"
        f"Every variable ({len(Settings.model_fields)}), with its type and limits: "
        f"[docs/configuration.md](docs/configuration.md).\n\n{_WEBHOOK_SECRETS}{README_END}"
    )


_DOC_HEAD = """# Configuration

Every environment variable the service reads, generated from `signalgen.settings.Settings` by
`python -m signalgen.settings --write` (a test checks that this file matches). Nothing set at all
is a valid configuration: SQLite file, local Redis. A value outside its type or limits stops
start-up naming the variable. A `.env` file in the working directory is read too.

"""

_WEBHOOK_SECRETS = """Not settings: the webhook secrets, read from the variables that `secret_env`
names in `config/webhooks.json` (shipped: `WEBHOOK_TRADINGVIEW_SECRET`, `WEBHOOK_CUSTOM_SECRET`;
unset: that source is refused).
"""


def configuration_doc() -> str:
    """docs/configuration.md."""
    return _DOC_HEAD + markdown_table() + "\n" + _WEBHOOK_SECRETS


def readme_with_section(readme: str) -> str:
    """`readme` with its generated section replaced by `readme_section()`."""
    pattern = re.compile(re.escape(README_START) + r".*?" + re.escape(README_END), re.DOTALL)
    if not pattern.search(readme):
        raise ValueError(f"README has no generated settings section ({README_START})")
    return pattern.sub(lambda _: readme_section(), readme, count=1)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m signalgen.settings --markdown [--main] | --write`."""
    parser = argparse.ArgumentParser(prog="python -m signalgen.settings", description=__doc__)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--markdown", action="store_true", help="print the variables' table")
    group.add_argument(
        "--write", action="store_true", help="rewrite docs/configuration.md and README's table"
    )
    parser.add_argument("--main", action="store_true", help="only the README's main variables")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown_table(main_only=args.main))
        return 0
    CONFIGURATION_DOC.write_text(configuration_doc(), encoding="utf-8")
    README.write_text(readme_with_section(README.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
