"""Generator health: what each generator's last run did, kept where the dashboard can read it.

Every `signals.generate` run writes one small Redis hash per generator
(`signalgen:generator:<name>`: last run time, signals new in it, bars it had against the bars
it needs, a provider or generator failure, the time of its last new signal). A hash write per
run is all it costs; nothing here is needed for delivery, so a failed write is logged and
ignored. `generator_state` turns that record, the generator's budget and the clock into the one
state an operator reads: ok, never ran, late, failing, provider paused, budget, insufficient
data (have/need).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from signalgen.logs import log_event

logger = logging.getLogger("signalgen.ops.health")

KEY_PREFIX = "signalgen:generator:"
#: A record outlives any sane schedule; a removed generator's hash goes away by itself.
TTL_SECONDS = 30 * 86400
#: A run is late when none happened for this many intervals (plus a minute of slack).
LATE_AFTER_INTERVALS = 3


def health_key(name: str) -> str:
    return f"{KEY_PREFIX}{name}"


def run_fields(result: Mapping[str, Any], now: datetime) -> dict[str, str]:
    """The hash fields of one run (`RunResult.as_dict()`): strings only, empty for none."""
    fields = {
        "last_run_at": now.astimezone(UTC).isoformat(),
        "new": str(int(result.get("new") or 0)),
        "failed": str(result.get("failed") or "")[:300],
        "provider_error": str(result.get("provider_error") or "")[:300],
        "bars": "" if result.get("bars") is None else str(int(result["bars"])),
        "needed": "" if result.get("needed") is None else str(int(result["needed"])),
    }
    if int(result.get("new") or 0) > 0:
        fields["last_signal_at"] = fields["last_run_at"]
    return fields


_clients: dict[tuple[int, str], Any] = {}
_clients_lock = threading.Lock()


def _client(redis_url: str) -> Any:
    import redis

    key = (os.getpid(), redis_url)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = redis.Redis.from_url(
                redis_url, socket_connect_timeout=2, socket_timeout=2
            )
        return client


def record_run(redis_url: str, result: Mapping[str, Any], now: datetime | None = None) -> None:
    """Write a run's record; never raises (health is for people, delivery does not wait on
    it)."""
    name = str(result.get("generator"))
    try:
        client = _client(redis_url)
        key = health_key(name)
        pipe = client.pipeline(transaction=False)
        pipe.hset(key, mapping=run_fields(result, now or datetime.now(UTC)))
        pipe.expire(key, TTL_SECONDS)
        pipe.execute()
    except Exception as exc:
        log_event(
            logger,
            "generator_health_not_recorded",
            logging.WARNING,
            generator=name,
            reason=f"{type(exc).__name__}: {exc}"[:300],
        )


def read_records(client: Any, names: list[str]) -> dict[str, dict[str, str]]:
    """Each generator's record (an empty dict when it never ran)."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(health_key(name))
    out: dict[str, dict[str, str]] = {}
    for name, raw in zip(names, pipe.execute(), strict=True):
        out[name] = {_text(k): _text(v) for k, v in (raw or {}).items()}
    return out


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def parse_time(value: str | None) -> datetime | None:
    """An ISO time from a record, or None when absent or unreadable (a record is not trusted)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


@dataclass(frozen=True)
class State:
    """One generator's state: `kind` for colour and tests, `text` for people."""

    kind: str  # ok | never_ran | late | failing | provider_paused | budget | insufficient_data
    text: str


def generator_state(
    record: Mapping[str, str],
    *,
    interval_seconds: int,
    now: datetime,
    budget_paused: str | None = None,
    budget_text: str = "",
) -> State:
    """The state an operator reads for one generator, most pressing first."""
    if budget_paused is not None:
        return State("budget", f"budget: {budget_paused} spent{budget_text}")
    last_run = parse_time(record.get("last_run_at"))
    if last_run is None:
        return State("never_ran", "never ran")
    if record.get("failed"):
        return State("failing", f"failing: {record['failed']}")
    if record.get("provider_error"):
        return State("provider_paused", f"provider paused: {record['provider_error']}")
    have, need = _int(record.get("bars")), _int(record.get("needed"))
    if have is not None and need is not None and have < need:
        return State("insufficient_data", f"insufficient data: have {have}, need {need} bars")
    late_after = LATE_AFTER_INTERVALS * max(interval_seconds, 1) + 60
    if (now - last_run).total_seconds() > late_after:
        return State("late", f"late: no run for {int((now - last_run).total_seconds())} s")
    return State("ok", "ok")
