"""A pipeline: what wakes it (signals matching its scanner, or a schedule) and what it runs.

Validated on construction; every error names its field (`scanner.tickers`, `schedule.crontab`,
`executor.url`, ...), so a bad import or a bad `signalgen pipelines add` says what to fix.

- `trigger_mode="signal"`: needs a `scanner` (explicit tickers or the watchlist, optional signal
  types, bias filter and minimum confidence). Matching rules live in `dispatcher.matching`.
- `trigger_mode="periodic"`: needs a `schedule` (`interval_seconds` or a 5-field crontab, parsed
  by Celery's own crontab parser, so what validates here is what Celery understands).
- `executor`: `record` (default), `webhook` (http(s) URL, HMAC secret, timeout, retries) or
  `celery` (task name and queue of the trading backend).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    AnyUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from schemas.signal import Bias, SignalType, Ticker

_STRICT = ConfigDict(frozen=True, extra="forbid")


class Scanner(BaseModel):
    """Which signals wake a `signal` pipeline.

    A signal matches when its type is in `signal_types` (empty: any type) and at least one of its
    tickers is scanned (listed in `tickers`, or in the watchlist when `watchlist` is true) and,
    for that ticker, passes the bias filter (`biases`, empty: any) and `min_confidence`. A ticker
    the signal gives no bias for passes only when neither filter is set.

    Mock signals (`Signal.is_mock`: the mock generator's) match only a scanner that opts in:
    `include_mock: true`, or `mock` named in `signal_types`. So test signals never run a real
    pipeline that did not ask for them.
    """

    model_config = _STRICT

    tickers: tuple[Ticker, ...] = Field(default=(), max_length=5000)
    watchlist: bool = False
    signal_types: tuple[SignalType, ...] = ()
    biases: tuple[Bias, ...] = ()
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0, allow_inf_nan=False)
    include_mock: bool = False

    @property
    def wants_mock(self) -> bool:
        """Whether mock signals may match: opted in, or `mock` named as a type."""
        return self.include_mock or SignalType.MOCK in self.signal_types

    @field_validator("tickers", "signal_types", "biases")
    @classmethod
    def _no_repeats(cls, value: tuple[Any, ...]) -> tuple[Any, ...]:
        if len(set(value)) != len(value):
            raise ValueError("values must not repeat")
        return value

    @model_validator(mode="after")
    def _tickers_or_watchlist(self) -> Scanner:
        if bool(self.tickers) == self.watchlist:
            raise ValueError("give either explicit tickers or watchlist=true (exactly one)")
        return self


class Schedule(BaseModel):
    """When a `periodic` pipeline runs: every `interval_seconds`, or on a 5-field `crontab`
    (minute hour day-of-month month day-of-week, UTC; Celery semantics: every field must match).
    """

    model_config = _STRICT

    interval_seconds: int | None = Field(default=None, ge=1, le=366 * 86400)
    crontab: str | None = Field(default=None, max_length=200)

    @field_validator("crontab")
    @classmethod
    def _valid_crontab(cls, value: str | None) -> str | None:
        if value is None:
            return None
        fields = value.split()
        if len(fields) != 5:
            raise ValueError(
                f"crontab {value!r} must have 5 fields (minute hour day-of-month month "
                f"day-of-week), got {len(fields)}"
            )
        try:
            _celery_crontab(" ".join(fields))
        except Exception as exc:  # celery raises ValueError / ParseException subclasses
            raise ValueError(f"crontab {value!r} is invalid: {exc}") from None
        return " ".join(fields)

    @model_validator(mode="after")
    def _exactly_one(self) -> Schedule:
        if (self.interval_seconds is None) == (self.crontab is None):
            raise ValueError("give either interval_seconds or crontab (exactly one)")
        return self

    def cron_fields(self) -> tuple[frozenset[int], ...]:
        """(minutes, hours, days of month, months, days of week with 0=Sunday) as sets."""
        if self.crontab is None:
            raise ValueError("not a crontab schedule")
        parsed = _celery_crontab(self.crontab)
        return tuple(
            frozenset(field)
            for field in (
                parsed.minute,
                parsed.hour,
                parsed.day_of_month,
                parsed.month_of_year,
                parsed.day_of_week,
            )
        )


def _celery_crontab(expression: str) -> Any:
    from celery.schedules import crontab  # the parser only; no app, no I/O

    return crontab.from_string(expression)


class RecordExecutor(BaseModel):
    """Store the execution and its signal (the default)."""

    model_config = _STRICT

    kind: Literal["record"] = "record"


class WebhookExecutor(BaseModel):
    """POST the signal JSON to `url`, signed: X-Signal-Signature = hex HMAC-SHA256 of
    "<X-Signal-Timestamp>.<X-Idempotency-Key>.<body>" with `secret`."""

    model_config = _STRICT

    kind: Literal["webhook"] = "webhook"
    url: AnyUrl
    secret: SecretStr = Field(min_length=16)
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    max_attempts: int = Field(default=4, ge=1, le=10)
    backoff_seconds: float = Field(default=0.5, ge=0, le=60)

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: AnyUrl) -> AnyUrl:
        if value.scheme not in ("http", "https"):
            raise ValueError(f"webhook url must be http:// or https://, not {value.scheme}://")
        if not value.host:
            raise ValueError("webhook url needs a host")
        return value

    @field_serializer("secret", when_used="json")
    def _reveal_secret_in_json(self, value: SecretStr) -> str:
        # The plain value for the edges that need it: dispatcher.store encrypts it before it is
        # stored (signalgen.crypto), an export writes it only with --include-secrets, reads
        # show a mask; logs never see it (signalgen.logs masks `secret`).
        return value.get_secret_value()


class CeleryExecutor(BaseModel):
    """send_task(`task`, queue=`queue`) to the trading backend's workers."""

    model_config = _STRICT

    kind: Literal["celery"] = "celery"
    task: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z_][\w.:\-]*$")
    queue: str = Field(min_length=1, max_length=200, pattern=r"^[\w.:\-]+$")


Executor = Annotated[RecordExecutor | WebhookExecutor | CeleryExecutor, Field(discriminator="kind")]


class PipelineSpec(BaseModel):
    """A pipeline as operators write it (JSON import/export, `signalgen pipelines add`)."""

    model_config = _STRICT

    id: uuid.UUID | None = None
    owner: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    enabled: bool = True
    trigger_mode: Literal["signal", "periodic"]
    scanner: Scanner | None = None
    schedule: Schedule | None = None
    executor: Executor = Field(default_factory=RecordExecutor)

    @model_validator(mode="after")
    def _trigger_needs(self) -> PipelineSpec:
        if self.trigger_mode == "signal":
            if self.scanner is None:
                raise ValueError("scanner: required when trigger_mode is 'signal'")
            if self.schedule is not None:
                raise ValueError("schedule: only periodic pipelines have a schedule")
        else:
            if self.schedule is None:
                raise ValueError("schedule: required when trigger_mode is 'periodic'")
            if self.scanner is not None:
                raise ValueError("scanner: only signal pipelines have a scanner")
        return self

    def executor_config(self) -> dict[str, Any]:
        """The executor's settings without its kind, JSON-ready (stored in executor_config)."""
        data = self.executor.model_dump(mode="json")
        data.pop("kind")
        return data


def describe_errors(error: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming its field: `executor.url: webhook url must be ...`."""
    lines = []
    for item in error.errors(include_url=False):
        path = ".".join(
            str(part) for part in item["loc"] if part not in ("record", "webhook", "celery")
        )
        message = item["msg"].removeprefix("Value error, ")
        where = f"{prefix}{path}" if path else (prefix.rstrip(".") or "pipeline")
        lines.append(f"{where}: {message}")
    return "\n".join(lines)
