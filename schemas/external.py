"""External signals: TradingView alerts and user-defined signals posted to the webhook ingress,
and the per-source configuration of that ingress (`config/webhooks.json`).

Bodies are validated strictly (unknown fields refused) so a typo comes back as a 422 that names
the field rather than as a signal that silently lacks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.signal import AwareUTC, Bias, Ticker
from schemas.text import refuse_surrogates

SOURCE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_\-]{0,63}$"
_PLACEHOLDER_SECRETS = {"changeme", "change-me", "changethis", "secret", "xxx", "token"}

#: TradingView `action`/`bias` words (as strategies write them) and the bias each one means.
ACTION_BIAS: dict[str, Bias] = {
    "buy": Bias.BULLISH,
    "long": Bias.BULLISH,
    "bullish": Bias.BULLISH,
    "sell": Bias.BEARISH,
    "short": Bias.BEARISH,
    "bearish": Bias.BEARISH,
    "neutral": Bias.NEUTRAL,
    "flat": Bias.NEUTRAL,
    "close": Bias.NEUTRAL,
    "exit": Bias.NEUTRAL,
}


def _upper_ticker(value: Any) -> Any:
    # TradingView's {{ticker}} is upper case already; a hand-written "aapl" is meant as AAPL.
    return value.strip().upper() if isinstance(value, str) else value


def split_exchange(value: str) -> tuple[str | None, str]:
    """`EXCHANGE:SYMBOL` (TradingView's `{{tickerid}}`, e.g. `NASDAQ:AAPL`) -> ("NASDAQ", "AAPL");
    a plain symbol -> (None, symbol). Pipelines scan symbols, so the exchange is kept aside.
    Raises ValueError for an empty part (`NASDAQ:`, `:AAPL`) or more than one prefix."""
    if ":" not in value:
        return None, value
    exchange, _, symbol = value.partition(":")
    if not exchange.strip() or not symbol.strip() or ":" in symbol:
        raise ValueError(f"ticker {value!r} is not SYMBOL or EXCHANGE:SYMBOL")
    return exchange.strip(), symbol.strip()


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


@dataclass(frozen=True)
class EventWindow:
    """The times an event posted to the ingress may claim: from `received_at - max_age` to
    `received_at + max_lead`. Given as the validation context `{"window": EventWindow(...)}`
    (the router does; without it, times are not bounded). A year-1 or year-9999 bar time is
    a value that cannot be right, and each one would sit at the end of every time series."""

    received_at: datetime
    max_age: timedelta | None
    max_lead: timedelta | None

    def check(self, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if self.max_age is not None and value < self.received_at - self.max_age:
            raise ValueError(
                f"is more than {self.max_age.days} days before now (the ingress's "
                "max_event_age_days)"
            )
        if self.max_lead is not None and value > self.received_at + self.max_lead:
            raise ValueError(
                f"is more than {int(self.max_lead.total_seconds())} s after now (the "
                "ingress's max_event_lead_seconds)"
            )
        return value


def _in_window(value: datetime | None, info: ValidationInfo) -> datetime | None:
    window = (info.context or {}).get("window") if isinstance(info.context, dict) else None
    return window.check(value) if isinstance(window, EventWindow) else value


class TradingViewAlert(BaseModel):
    """The JSON a TradingView alert message posts (fill the placeholders in the alert text):

        {"secret": "...", "ticker": "{{ticker}}", "action": "{{strategy.order.action}}",
         "time": "{{time}}", "price": {{close}}, "interval": "{{interval}}",
         "alert_id": "optional, your own id of this alert firing"}

    TradingView cannot send headers, so the source's token travels in `secret`. A ticker in
    `EXCHANGE:SYMBOL` form (`{{tickerid}}`, e.g. `NASDAQ:AAPL`) becomes the symbol (`AAPL`,
    which pipelines scan) and the exchange goes to `exchange`, kept in the signal's metadata.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    secret: str = Field(min_length=1, max_length=200)
    ticker: Ticker
    action: str = Field(min_length=1, max_length=20)
    alert_id: str | None = Field(default=None, min_length=1, max_length=200)
    #: The bar's time ({{time}}): part of the alert's identity when there is no alert_id.
    time: AwareUTC | None = None
    timenow: AwareUTC | None = None
    price: float | None = None
    confidence: float | None = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    interval: str | None = Field(default=None, max_length=20)
    exchange: str | None = Field(default=None, max_length=40)
    strategy: str | None = Field(default=None, max_length=200)
    message: str | None = Field(default=None, max_length=1000)

    _text = field_validator("*", mode="before")(refuse_surrogates)
    _ticker_case = field_validator("ticker", mode="before")(_upper_ticker)
    _price_finite = field_validator("price")(_finite)
    _times = field_validator("time", "timenow")(_in_window)

    @model_validator(mode="before")
    @classmethod
    def _exchange_from_ticker(cls, data: Any) -> Any:
        # TradingView's {{tickerid}} is NASDAQ:AAPL; the pipeline scans AAPL. The exchange
        # moves to `exchange` (kept in the signal's metadata). A malformed or disagreeing one
        # is left as it is, for the field validators below to refuse by name.
        if not isinstance(data, dict) or not isinstance(data.get("ticker"), str):
            return data
        try:
            exchange, symbol = split_exchange(data["ticker"].strip().upper())
        except ValueError:
            return data
        given = data.get("exchange")
        if exchange is None or (isinstance(given, str) and given.strip().upper() != exchange):
            return data
        return {**data, "ticker": symbol, "exchange": exchange}

    @field_validator("ticker")
    @classmethod
    def _symbol_only(cls, value: str) -> str:
        if ":" in value:  # what the validator above did not split
            try:
                split_exchange(value)
            except ValueError:
                raise ValueError(f"ticker {value!r} is not SYMBOL or EXCHANGE:SYMBOL") from None
            raise ValueError(f"ticker {value!r}: its exchange prefix disagrees with `exchange`")
        return value

    @field_validator("action")
    @classmethod
    def _known_action(cls, value: str) -> str:
        word = value.strip().lower()
        if word not in ACTION_BIAS:
            raise ValueError(f"action {value!r} is not one of {', '.join(sorted(ACTION_BIAS))}")
        return word

    @property
    def bias(self) -> Bias:
        return ACTION_BIAS[self.action]


class ExternalSignalIn(BaseModel):
    """A user-defined signal posted to /webhooks/signals/{source}, signed with HMAC-SHA256."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Your id of this event; a resend with the same id is the same signal.
    event_id: str | None = Field(default=None, min_length=1, max_length=200)
    tickers: tuple[Ticker, ...] = Field(min_length=1, max_length=100)
    bias: Bias
    confidence: float = Field(default=0.5, ge=0.0, le=1.0, allow_inf_nan=False)
    reasoning: str = Field(default="", max_length=2000)
    event_time: AwareUTC | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    _text = field_validator("*", mode="before")(refuse_surrogates)
    _times = field_validator("event_time")(_in_window)

    @field_validator("tickers", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [_upper_ticker(item) for item in value]
        return value

    @field_validator("bias", mode="before")
    @classmethod
    def _bias_words(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ACTION_BIAS:
            return ACTION_BIAS[value.strip().lower()]
        return value


class RateLimitConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    calls: int = Field(default=60, ge=1, le=1_000_000)
    period_seconds: float = Field(default=60.0, gt=0, le=86_400)


class WebhookSourceConfig(BaseModel):
    """One sender. `kind` picks the route and how it authenticates:

    - "tradingview": POST /webhooks/tradingview/{name}; the token in the body field `secret`;
    - "hmac": POST /webhooks/signals/{name}; header `X-Signature-256: sha256=<hex>` (HMAC-SHA256
      of the raw body with the secret).

    The secret comes from the environment variable `secret_env` (production) or `secret`
    (development and tests only).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["tradingview", "hmac"]
    enabled: bool = True
    secret: str | None = Field(default=None, min_length=16, max_length=500)
    secret_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    #: Confidence of an alert that does not state one.
    default_confidence: float = Field(default=0.6, ge=0.0, le=1.0, allow_inf_nan=False)

    @field_validator("secret")
    @classmethod
    def _no_placeholder(cls, value: str | None) -> str | None:
        if value is not None and value.strip().lower() in _PLACEHOLDER_SECRETS:
            raise ValueError("secret is a placeholder")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> WebhookSourceConfig:
        if (self.secret is None) == (self.secret_env is None):
            raise ValueError("set exactly one of `secret` and `secret_env`")
        return self


class WebhooksConfig(BaseModel):
    """`config/webhooks.json`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = "1.0"
    description: str = ""
    max_body_bytes: int = Field(default=16_384, ge=256, le=1_048_576)
    #: Deepest nesting of arrays and objects a body may have (checked on the raw bytes).
    max_body_depth: int = Field(default=32, ge=2, le=256)
    #: How far before / after the time of receipt an event's own time (`time`, `timenow`,
    #: `event_time`) may be; outside: 422 naming the field. null: no bound that side.
    max_event_age_days: int | None = Field(default=3650, ge=1, le=36_500)
    max_event_lead_seconds: int | None = Field(default=86_400, ge=0, le=31_536_000)
    sources: dict[str, WebhookSourceConfig] = Field(default_factory=dict)

    def event_window(self, received_at: datetime) -> EventWindow:
        age, lead = self.max_event_age_days, self.max_event_lead_seconds
        return EventWindow(
            received_at,
            timedelta(days=age) if age is not None else None,
            timedelta(seconds=lead) if lead is not None else None,
        )

    @field_validator("sources")
    @classmethod
    def _names(cls, value: dict[str, WebhookSourceConfig]) -> dict[str, WebhookSourceConfig]:
        import re

        for name in value:
            if not re.match(SOURCE_NAME_PATTERN, name):
                raise ValueError(f"source name {name!r} must be lower-case letters, digits, _ -")
        return value
