"""Messages the worker refuses on its Celery queues are dead-lettered, never just dropped.

Celery refuses, before any task code runs, a message on a task queue whose content type is not
accepted (`accept_content = ["json"]`: a pickle is never unpickled), whose task is unknown, or
that cannot be decoded. It logs and rejects (or acks) such a message, and it is gone. Here the
same refusal also records it (stage `refused`) with the reason, the content type, the headers
and the raw bytes (capped), so an operator sees who sent what.

Wired by `worker_consumer` (celeryconfig) for decode errors, which Celery signals nowhere, and by
the `task_rejected` / `task_unknown` signals for the rest.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals
from celery.worker.consumer import Consumer

from signalgen.logs import log_event

logger = logging.getLogger("tasks.refused")

#: Bytes of a refused body kept in the dead letter (an attacker may send large ones).
MAX_KEPT_BODY = 64 * 1024


def _headers(message: Any) -> dict[str, Any]:
    from signalgen.bus.envelope import json_safe as _json_safe

    headers = getattr(message, "headers", None) or {}
    # argsrepr/kwargsrepr are whatever the sender wrote: keep the names, not the values.
    kept = {k: v for k, v in dict(headers).items() if k not in ("argsrepr", "kwargsrepr")}
    return dict(_json_safe(kept))


def record_refused(message: Any, reason: str) -> None:
    """Dead-letter a refused broker message (never decoding its body). Never raises."""
    try:
        body = getattr(message, "body", b"") or b""
        raw = body.encode("utf-8", "replace") if isinstance(body, str) else bytes(body)
        content_type = getattr(message, "content_type", None)
        from signalgen.ops.dlq import add_dead_letter
        from signalgen.storage import get_database

        with get_database().session() as session:
            add_dead_letter(
                session,
                stage="refused",
                reason=reason[:4000],
                body=raw[:MAX_KEPT_BODY],
                content_type=(content_type or "")[:100] or None,
                headers=_headers(message),
                attempts=1,
            )
        log_event(
            logger,
            "dead_lettered",
            logging.WARNING,
            stage="refused",
            reason=reason,
            content_type=content_type,
            bytes=len(raw),
        )
    except Exception as exc:  # the database may be away: the refusal itself still stands
        log_event(
            logger,
            "dead_letter_not_recorded",
            logging.ERROR,
            stage="refused",
            reason=reason,
            error=f"{type(exc).__name__}: {exc}",
        )


class RefusingConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, recording undecodable messages before it acks them away."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        record_refused(message, f"undecodable message refused: {type(exc).__name__}: {exc}")
        super().on_decode_error(message, exc)


@signals.task_rejected.connect
def _rejected(message: Any = None, exc: BaseException | None = None, **_: Any) -> None:
    if message is not None:
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "unknown message format"
        record_refused(message, f"message refused: {reason}")


@signals.task_unknown.connect
def _unknown(message: Any = None, name: str | None = None, **_: Any) -> None:
    if message is not None:
        record_refused(message, f"unknown task {name!r} refused")
