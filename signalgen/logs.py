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

#: Values of these keys, and URL passwords / token query parameters, are masked in every log line.
_SECRET_KEYS = re.compile(r"(?i)(api[_-]?key|token|secret|password|passwd|authorization|signature)")
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)(?P<user>[^:/@\s]*):[^@/\s]+@", re.I)
_QUERY_SECRET = re.compile(r"(?i)([?&](?:token|api_?key|secret)=)[^&\s\"']+")


def redact(text: str) -> str:
    """Mask credentials in free text (URLs with passwords, token query parameters)."""
    text = _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", text)
    return _QUERY_SECRET.sub(r"\1***", text)


def _redact_value(key: str, value: Any) -> Any:
    if _SECRET_KEYS.search(key) and value not in (None, ""):
        return "***"
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        message = record.getMessage()
        out: dict[str, Any] = {
            "event": getattr(record, "event", None) or message,
            "level": record.levelname,
            "logger": record.name,
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
        }
        if message and message != out["event"]:
            out["message"] = message
        if isinstance(fields, dict):
            for key, value in fields.items():
                out[key] = _redact_value(key, value)
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in ("fields", "event") and not key.startswith("_"):
                out.setdefault(key, _redact_value(key, value))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        event = getattr(record, "event", None) or record.getMessage()
        tail = " ".join(f"{k}={_redact_value(k, v)}" for k, v in fields.items())
        line = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {event} {tail}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact(line.rstrip())


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event; `fields` become top-level JSON keys."""
    logger.log(level, event, extra={"event": event, "fields": fields})
