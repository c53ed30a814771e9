"""Webhook ingress without the web framework: authentication, identity, signal building,
record-and-publish. `signalgen.interfaces.http.ingress` is the thin FastAPI router around it.

Identity: an alert's signal id derives from the source and the alert's own id when it gives one
(`alert_id` / `event_id`), else from a SHA-256 of its validated content without the secret
(which includes the bar time when sent). TradingView resends an alert it did not see answered;
the resend has the same id, `record_signals` inserts it once, and only the first is published.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.external import (
    ExternalSignalIn,
    TradingViewAlert,
    WebhooksConfig,
    WebhookSourceConfig,
)
from schemas.signal import Signal, SignalBias, SignalType, stable_signal_id
from signalgen.bus import publish_recorded, record_signals
from signalgen.logs import log_event
from signalgen.marketdata.limiter import Limit, RedisRateLimiter

logger = logging.getLogger("signalgen.ingress")

SIGNATURE_HEADER = "X-Signature-256"


class WebhookConfigError(ValueError):
    """A webhooks config that cannot run; the message names the file and the field."""


def default_config_path() -> Path:
    from signalgen.settings import get_settings

    return get_settings().webhooks_config_path


def load_webhooks_config(path: Path | None = None) -> WebhooksConfig:
    """Read and validate the webhooks config; a missing file means no sources."""
    from signalgen.config import ConfigError, load_json_model

    path = path or default_config_path()
    if not path.exists():
        log_event(logger, "webhooks_config_missing", logging.WARNING, path=str(path))
        return WebhooksConfig()
    try:
        return load_json_model(path, WebhooksConfig)
    except ConfigError as exc:
        raise WebhookConfigError(str(exc)) from None


def source_secret(name: str, source: WebhookSourceConfig) -> bytes | None:
    """The source's secret as bytes, or None when its environment variable is unset/empty."""
    if source.secret is not None:
        return source.secret.encode("utf-8")
    value = os.environ.get(source.secret_env or "", "")
    if not value.strip():
        return None
    return value.encode("utf-8")


def token_matches(given: str, expected: bytes) -> bool:
    """Constant-time comparison of a body token with the source's secret."""
    # surrogatepass: a JSON body can carry a lone surrogate ("\ud800"); it must fail the
    # comparison, not raise.
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected)


def signature_matches(body: bytes, header: str | None, secret: bytes) -> bool:
    """`header` is "sha256=<hex>" of HMAC-SHA256(secret, body); compared in constant time."""
    if not header:
        return False
    scheme, _, digest = header.strip().partition("=")
    if scheme.lower() != "sha256" or not digest:
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(
        digest.strip().lower().encode("ascii", "replace"), expected.encode("ascii")
    )


#: JSON strings (their escapes included), which may hold any bracket as text. An unclosed
#: string runs to the end (so no quote is scanned twice: linear time on any input).
_JSON_STRING = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")


def json_depth(body: bytes, limit: int) -> int:
    """How deep arrays and objects nest in `body`, counted on the raw bytes (strings skipped)
    without parsing, and stopping at `limit + 1`: a body nested past the limit is refused
    before any parser recurses into it. Malformed JSON gets some number; the parser then
    refuses it."""
    depth = deepest = 0
    for match in _BRACKETS.finditer(_JSON_STRING.sub(b'""', body)):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        else:
            depth = max(depth - 1, 0)
    return deepest


def sign(body: bytes, secret: bytes | str) -> str:
    """The header value a sender puts in X-Signature-256 (for clients and tests)."""
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def signal_source(name: str) -> str:
    """The `source` of signals from webhook source `name`."""
    return f"webhook.{name}"


def _content_key(content: dict[str, Any]) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def tradingview_signal(
    alert: TradingViewAlert, name: str, received_at: datetime, default_confidence: float
) -> Signal:
    """The external Signal of a TradingView alert. Pure."""
    source = signal_source(name)
    if alert.alert_id is not None:
        event_key = f"alert:{alert.alert_id}"
    else:
        event_key = _content_key(alert.model_dump(mode="json", exclude={"secret"}))
    ticker = alert.ticker
    confidence = alert.confidence if alert.confidence is not None else default_confidence
    reasoning = alert.message or (
        f"TradingView alert: {alert.action} {ticker}"
        + (f" at {alert.price:g}" if alert.price is not None else "")
        + (f" ({alert.strategy})" if alert.strategy else "")
    )
    metadata = alert.model_dump(
        mode="json", exclude={"secret", "message", "ticker", "confidence"}, exclude_none=True
    )
    metadata["webhook_source"] = name
    metadata["provider"] = "tradingview"
    return Signal(
        signal_id=stable_signal_id(
            source=source, signal_type=SignalType.EXTERNAL, tickers=(ticker,), event_key=event_key
        ),
        signal_type=SignalType.EXTERNAL,
        tickers=(ticker,),
        bias={
            ticker: SignalBias(
                ticker=ticker, bias=alert.bias, confidence=confidence, reasoning=reasoning[:2000]
            )
        },
        metadata=metadata,
        timestamp=received_at,
        event_time=alert.time or received_at,
        source=source,
    )


def external_signal(payload: ExternalSignalIn, name: str, received_at: datetime) -> Signal:
    """The external Signal of a signed user-defined signal. Pure."""
    source = signal_source(name)
    if payload.event_id is not None:
        event_key = f"event:{payload.event_id}"
    else:
        event_key = _content_key(payload.model_dump(mode="json"))
    return Signal(
        signal_id=stable_signal_id(
            source=source,
            signal_type=SignalType.EXTERNAL,
            tickers=payload.tickers,
            event_key=event_key,
        ),
        signal_type=SignalType.EXTERNAL,
        tickers=payload.tickers,
        bias={
            ticker: SignalBias(
                ticker=ticker,
                bias=payload.bias,
                confidence=payload.confidence,
                reasoning=payload.reasoning,
            )
            for ticker in payload.tickers
        },
        metadata={
            **payload.metadata,
            "webhook_source": name,
            **({"event_id": payload.event_id} if payload.event_id else {}),
        },
        timestamp=received_at,
        event_time=payload.event_time or received_at,
        source=source,
    )


@dataclass(frozen=True)
class Accepted:
    signal_id: str
    new: bool
    published: bool


@dataclass
class WebhookIngress:
    """What the router needs: config, database, publisher, and a rate limiter per source."""

    config: WebhooksConfig
    database: Any
    publisher: Any
    redis: Any
    _limiters: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def source(self, name: str) -> WebhookSourceConfig | None:
        source = self.config.sources.get(name)
        return source if source is not None and source.enabled else None

    def _limiter(self, name: str) -> RedisRateLimiter:
        with self._lock:
            limiter = self._limiters.get(name)
            if limiter is None:
                limit = self.config.sources[name].rate_limit
                limiter = RedisRateLimiter(
                    self.redis,
                    [Limit(limit.calls, limit.period_seconds)],
                    key=f"signalgen:ratelimit:webhook:{name}",
                    guard_seconds=0.0,
                )
                self._limiters[name] = limiter
            return limiter

    def rate_limit_wait(self, name: str) -> float:
        """0.0 when the source may send now (a slot is taken), else seconds until it may."""
        return self._limiter(name).try_acquire()

    def warm_up(self) -> None:
        """Open the database, Redis and broker connections (declaring the exchange and the
        intake queue), load the rate-limit script, and run the
        recording statement once in a transaction that is rolled back (its first compilation
        costs tens of milliseconds that the first alert should not pay)."""
        import uuid

        from sqlalchemy.orm import Session

        now = datetime.now(UTC)
        probe = Signal(
            signal_id=uuid.uuid4(),
            signal_type=SignalType.EXTERNAL,
            tickers=("WARMUP",),
            bias={},
            timestamp=now,
            event_time=now,
            source="webhook.warm-up",
        )
        with Session(self.database.engine) as session:
            record_signals(session, [probe])
            # The outbox's "mark published" update is the request's other first-time compile.
            # (No public hook for it yet; it runs on the probe row and is rolled back.)
            from signalgen.bus.outbox import _mark_published

            _mark_published(session, probe.signal_id, now)
            session.rollback()
        self.redis.ping()
        connect = getattr(self.publisher, "connect", None)  # KombuPublisher: broker + declares
        if connect is not None:
            connect()
        for name, source in self.config.sources.items():
            if source.enabled:
                self._limiter(name)

    def accept(self, signal: Signal) -> Accepted:
        """Record `signal` once and publish it if this call recorded it (blocking I/O)."""
        with self.database.session() as session:
            new = record_signals(session, [signal])
        if not new:
            return Accepted(str(signal.signal_id), new=False, published=False)
        outcome = publish_recorded(self.database, self.publisher, new)
        return Accepted(str(signal.signal_id), new=True, published=outcome.published == 1)
