"""Structured JSON logs: one object per line, `event` first, secrets never written.

Use `log_event(logger, "signal_emitted", signal_id=..., ...)`; the fields land as top-level keys.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

#: Values of these keys are masked wherever they appear in a log line's structured fields.
_SECRET_KEYS = re.compile(
    r"(?i)(api[_-]?key|token|secret|password|passwd|passphrase|authorization|signature"
    r"|credential|cookie)"
)
MASK = "***"

#: Where a URL (or its query) ends in free text: whitespace, quotes, angle brackets, backquote.
_STOP = r"\s\"'<>`"
#: A URL in free text: any `scheme://...` (http, redis, amqp, postgresql+psycopg, ws, ...); a
#: word with a `/` before its query or fragment (`/hook?token=...`, as requests' errors name the
#: URL; `host/p#a=b`); or a bare query (`?a=b&c=d`) starting a word. Each alternative starts
#: only where a scheme or a word starts and never backtracks (possessive quantifiers), so the
#: time is linear in the text whatever it holds.
_URL = re.compile(
    rf"(?i)(?<![a-z0-9+.\-])[a-z][a-z0-9+.\-]*+://[^{_STOP}]*+"
    rf"|(?<![^{_STOP}])(?=[^{_STOP}?#]*/)[^{_STOP}?#]*+[?#][^{_STOP}]*+"
    rf"|(?<![^{_STOP}(\[=,:])\?[^{_STOP}=?#&]++=[^{_STOP}]*+"
)
#: `user:password@` after a scheme (the password is what is masked; it may hold `@`).
_USERINFO = re.compile(
    r"(?P<head>(?<![a-z0-9+.\-])[a-z][a-z0-9+.\-]*+://[^:/?#@\s]*+):[^/\s]*@", re.I
)
#: One `key=value` of a query or fragment; `&` and `;` separate them.
_PARAM = re.compile(r"(?P<key>[^&;=]*)=(?P<value>[^&;]*)")


def _mask_params(part: str) -> str:
    return _PARAM.sub(lambda m: f"{m['key']}={MASK}" if m["value"] else m[0], part)


def _redact_url(match: re.Match[str]) -> str:
    url = _USERINFO.sub(rf"\g<head>:{MASK}@", match[0])
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    head, tail = url[:cut], url[cut:]
    if not tail:
        return head
    query, hash_, fragment = tail[1:].partition("#")
    if tail[0] == "#":  # no query, only a fragment
        return f"{head}#{_mask_params(query)}"
    return f"{head}?{_mask_params(query)}{hash_}{_mask_params(fragment)}"


def redact(text: str) -> str:
    """Mask credentials in free text: in every URL found (any scheme, a bare path with a query,
    a bare `?a=b` query), the userinfo password and *every* query and fragment value; keys,
    hosts and paths are kept (`https://h/p?access_token=***&page=***`). Text that holds no URL
    is returned unchanged."""
    if "?" not in text and "#" not in text and "://" not in text:
        return text
    return _URL.sub(_redact_url, text)


def _redact_value(key: str, value: Any) -> Any:
    """`value` made JSON-ready with every secret masked: the whole value under a secret-ish
    key, URLs in strings (`redact`), recursively through dicts and lists."""
    if _SECRET_KEYS.search(key) and value not in (None, ""):
        return MASK
    return _scrub(value)


def redact_data(value: Any) -> Any:
    """`value` (str, number, dict, list, ...) JSON-ready, every secret in it masked: strings
    through `redact`, and the whole value under a secret-ish key (`token`, `password`, ...)."""
    return _scrub(value)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {str(k): _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(item) for item in value]
    return redact(str(value))


#: Celery's per-task lines (received, succeeded, failed, retry) carry the task's arguments and
#: return value in `data`; a line keeps the task's name and id, its run time, and the reason.
_CELERY_TASK_LOGGERS = {"celery.app.trace", "celery.worker.strategy"}
_CELERY_TASK_EVENTS = (
    ("received", "task_received"),
    ("succeeded", "task_succeeded"),
    ("retry", "task_retry"),
)


def celery_task_event(record: logging.LogRecord) -> tuple[str, dict[str, Any]] | None:
    """`(event, fields)` for one of Celery's per-task lines: `task`, `task_id`, and
    `runtime_seconds`, `eta` or the `reason` where the line has one; never the arguments, the
    keyword arguments or the return value (a signal's whole body). None for any other record."""
    data = getattr(record, "data", None)
    if record.name not in _CELERY_TASK_LOGGERS or not isinstance(data, dict):
        return None
    template = str(record.msg)
    event = next((name for word, name in _CELERY_TASK_EVENTS if f"] {word}" in template), None)
    if event is None:
        event = "task_failed" if "%(exc)s" in template else "task_ignored"
    fields: dict[str, Any] = {"task": data.get("name"), "task_id": data.get("id")}
    if isinstance(data.get("runtime"), int | float):
        fields["runtime_seconds"] = round(float(data["runtime"]), 4)
    if data.get("eta"):
        fields["eta"] = str(data["eta"])
    if event in ("task_failed", "task_retry") and data.get("exc") is not None:
        fields["reason"] = str(data["exc"])[:500]
    if event in ("task_failed", "task_ignored") and data.get("description"):
        fields["description"] = str(data["description"])
    return event, fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        celery_task = celery_task_event(record)
        if celery_task is not None:
            return self._format_celery_task(record, *celery_task)
        fields = getattr(record, "fields", None)
        message = record.getMessage()
        out: dict[str, Any] = {
            "event": redact(str(getattr(record, "event", None) or message)),
            "level": record.levelname,
            "logger": record.name,
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        }
        message = redact(message)
        if message and message != out["event"]:
            out["message"] = message
        if isinstance(fields, dict):
            for key, value in fields.items():
                out[str(key)] = _redact_value(str(key), value)
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in ("fields", "event") and not key.startswith("_"):
                out.setdefault(key, _redact_value(key, value))
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        # Every string was redacted before encoding (never the JSON text: a mask must not cut
        # into an escape sequence).
        return json.dumps(out, default=str)

    def _format_celery_task(
        self, record: logging.LogRecord, event: str, fields: dict[str, Any]
    ) -> str:
        out: dict[str, Any] = {
            "event": event,
            "level": record.levelname,
            "logger": record.name,
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        }
        out.update({key: _redact_value(key, value) for key, value in fields.items()})
        if record.exc_info:
            out["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    """`HH:MM:SS LEVEL logger: event key=value ...`, for a person at a terminal."""

    default_time_format = "%H:%M:%S"
    default_msec_format = "%s.%03d"

    def format(self, record: logging.LogRecord) -> str:
        celery_task = celery_task_event(record)
        if celery_task is not None:
            event, fields = celery_task
        else:
            fields = getattr(record, "fields", None) or {}
            event = getattr(record, "event", None) or record.getMessage()
        tail = " ".join(f"{k}={_text_value(_redact_value(k, v))}" for k, v in fields.items())
        line = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {event} {tail}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line.rstrip())


def _text_value(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


def resolve_format(fmt: str, stream: Any) -> str:
    """`auto` (the default): `text` when `stream` is a terminal (a person reads it), `json`
    otherwise (a collector parses it). `json` and `text` are taken as given."""
    if fmt != "auto":
        return fmt
    isatty = getattr(stream, "isatty", None)
    try:
        return "text" if callable(isatty) and isatty() else "json"
    except ValueError:  # a closed stream
        return "json"


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    handler = logging.StreamHandler(sys.stdout)
    chosen = resolve_format(fmt, sys.stdout)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event; `fields` become top-level JSON keys."""
    logger.log(level, event, extra={"event": event, "fields": fields})
