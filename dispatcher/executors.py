"""What an execution does: `record` (default), signed `webhook`, or `celery` send_task.

Executors get everything as arguments (the payload, the executor settings, an HTTP session, a
`send_task` callable, a sleep function), so they run the same in a worker and in a unit test.
Each returns an `Outcome` the caller stores on the execution row.

Webhook signing: `X-Signal-Timestamp` is the Unix time (seconds) of the attempt and
`X-Signal-Signature` the hex HMAC-SHA256, keyed with the pipeline's secret, of
`"<timestamp>.<idempotency key>.<body>"`, the idempotency key being the `X-Idempotency-Key`
header's value; receivers recompute it, reject stale timestamps (replay protection) and can
trust the key they dedupe on. `X-Idempotency-Key` (and the Celery task id) are the same on every
attempt of one execution, so a receiver can drop a delivery repeated after a crash.

Outbound policy (`dispatcher.egress`): a webhook connects only to addresses the policy allows,
checked when connecting (`dispatcher.egress_http`), never follows a redirect, and a refused
destination fails the execution without retries and with one error text whatever the address or
port state. A Celery target no longer on the operator's allowlist is not sent.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dispatcher.admission import Refused
from dispatcher.egress import (
    DELIVERY_REFUSED,
    EgressPolicy,
    EgressRefused,
    check_celery,
    current_executor_policy,
    current_policy,
)
from schemas.pipeline import CeleryExecutor, RecordExecutor, WebhookExecutor
from signalgen.config.operations import ExecutorPolicy
from signalgen.logs import redact

if TYPE_CHECKING:  # requests (and the vetted session) load only where a webhook is sent
    import requests

#: Namespace of the task ids the celery executor derives from (pipeline, idempotency key).
EXECUTION_NAMESPACE = uuid.UUID("0c5c2b0e-8f3e-5a55-9a51-3f7d2c1e6b40")
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 30.0


@dataclass(frozen=True)
class ExecutionContext:
    execution_id: int
    pipeline_id: uuid.UUID
    idempotency_key: str
    #: The JSON sent to the pipeline: the signal as published, or the slot for periodic runs.
    payload: str


@dataclass
class Outcome:
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def execution_task_id(pipeline_id: uuid.UUID, idempotency_key: str) -> str:
    """A task id stable across attempts of one execution (the backend's idempotency key)."""
    return str(uuid.uuid5(EXECUTION_NAMESPACE, f"{pipeline_id}|{idempotency_key}"))


def sign(secret: str, timestamp: str, idempotency_key: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of `"<timestamp>.<idempotency key>.<body>"`."""
    message = b".".join((timestamp.encode("ascii"), idempotency_key.encode("utf-8"), body))
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def idempotency_header(context: ExecutionContext) -> str:
    """The `X-Idempotency-Key` value: the same on every attempt of one execution."""
    return f"{context.pipeline_id}:{context.idempotency_key}"


def backoff_delay(attempt: int, base: float, rng: Callable[[], float] = random.random) -> float:
    """Exponential back-off with jitter: half fixed, half random, capped."""
    ceiling = min(MAX_BACKOFF_SECONDS, base * 2 ** (attempt - 1))
    return float(ceiling / 2 + rng() * ceiling / 2)


def run_record(context: ExecutionContext, config: RecordExecutor) -> Outcome:
    """The execution row and its signal are the record; nothing else to do."""
    return Outcome(ok=True, detail={"executor": "record", "payload_bytes": len(context.payload)})


def run_webhook(
    context: ExecutionContext,
    config: WebhookExecutor,
    *,
    http: requests.Session | None = None,
    egress: EgressPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
    rng: Callable[[], float] = random.random,
) -> Outcome:
    """POST the payload, signed; retry transport errors, timeouts, 408/425/429/5xx.

    Only to addresses `egress` (default: this process's settings) allows: our own session
    checks each connection; an injected `http` session (tests, callers with their own
    transport) gets the destination vetted before each attempt instead. A refusal is a failed,
    non-retried outcome with one error text (`DELIVERY_REFUSED`) and no timing; a 3xx is a
    failure too (redirects are never followed)."""
    import requests

    from dispatcher.egress_http import vetted_session

    body = context.payload.encode("utf-8")
    secret = config.secret.get_secret_value()
    key = idempotency_header(context)
    policy = egress or current_policy()
    url = str(config.url)
    session = http or vetted_session(policy)
    attempts: list[dict[str, Any]] = []
    try:
        for attempt in range(1, config.max_attempts + 1):
            timestamp = str(int(clock()))
            headers = {
                "Content-Type": "application/json",
                "User-Agent": "signalgen-webhook/1",
                "X-Signal-Timestamp": timestamp,
                "X-Signal-Signature": sign(secret, timestamp, key, body),
                "X-Idempotency-Key": key,
                "X-Pipeline-Id": str(context.pipeline_id),
            }
            started = time.monotonic()
            try:
                if http is not None:
                    _vet_url(policy, url)
                response = session.post(
                    url,
                    data=body,
                    headers=headers,
                    timeout=config.timeout_seconds,
                    allow_redirects=False,
                )
            except EgressRefused:
                # Same text, no timing: whether anything listens there stays unknown.
                attempts.append({"error": "refused by egress policy"})
                return Outcome(
                    ok=False,
                    error=DELIVERY_REFUSED,
                    detail={"executor": "webhook", "attempts": attempts},
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                attempts.append(
                    {
                        "error": type(exc).__name__,
                        "ms": round((time.monotonic() - started) * 1000, 1),
                    }
                )
                # The message names the URL, whose query may hold the receiver's token: it is
                # stored on the execution and in dead letters, so it is redacted here.
                retryable, error = True, redact(f"{type(exc).__name__}: {exc}")
            else:
                attempts.append(
                    {
                        "status": response.status_code,
                        "ms": round((time.monotonic() - started) * 1000, 1),
                    }
                )
                if 200 <= response.status_code < 300:
                    return Outcome(
                        ok=True,
                        detail={
                            "executor": "webhook",
                            "status": response.status_code,
                            "attempts": attempts,
                        },
                    )
                retryable = response.status_code in RETRY_STATUSES
                error = f"HTTP {response.status_code}"
                if 300 <= response.status_code < 400:
                    error += ": redirect not followed"
            if not retryable or attempt == config.max_attempts:
                return Outcome(
                    ok=False, error=error, detail={"executor": "webhook", "attempts": attempts}
                )
            sleep(backoff_delay(attempt, config.backoff_seconds, rng))
    finally:
        if http is None:
            session.close()
    raise AssertionError("unreachable")  # pragma: no cover


def _vet_url(policy: EgressPolicy, url: str) -> None:
    """EgressRefused unless every address of `url`'s host is allowed (an injected session
    connects on its own; this is the check it gets)."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    import requests

    try:
        policy.vet(parts.hostname or "", port)
    except OSError as exc:
        raise requests.ConnectionError(f"host does not resolve: {exc}") from None


def run_celery(
    context: ExecutionContext,
    config: CeleryExecutor,
    *,
    send_task: Callable[..., Any],
    policy: ExecutorPolicy | None = None,
) -> Outcome:
    """send_task(config.task) to config.queue with the signal; the task id is stable per
    execution, so a resend after a crash carries the same id. A target the operator's allowlist
    (`policy`, default: operations.json) no longer has fails the execution, nothing sent."""
    try:
        check_celery(config.task, config.queue, policy or current_executor_policy())
    except Refused as exc:
        return Outcome(
            ok=False,
            error=f"celery target not allowed: {exc.reason}",
            detail={"executor": "celery", "task": config.task, "queue": config.queue},
        )
    task_id = execution_task_id(context.pipeline_id, context.idempotency_key)
    send_task(
        config.task,
        args=[context.payload],
        kwargs={
            "pipeline_id": str(context.pipeline_id),
            "idempotency_key": context.idempotency_key,
        },
        queue=config.queue,
        task_id=task_id,
    )
    return Outcome(
        ok=True,
        detail={
            "executor": "celery",
            "task": config.task,
            "queue": config.queue,
            "task_id": task_id,
        },
    )
