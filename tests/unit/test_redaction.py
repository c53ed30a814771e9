"""`signalgen.logs.redact`: every query (and fragment) value of every URL in free text is masked,
keys kept; URL passwords masked; text without a URL is left exactly as it was. The log
formatters, execution errors and dead-letter reasons all go through it."""

from __future__ import annotations

import io
import json
import logging

import pytest
import requests

from signalgen.logs import JsonFormatter, TextFormatter, log_event, redact, redact_data

#: The query parameter names of the issue, and a few no list would think of.
ISSUE_NAMES = ["access_token", "key", "password", "client_secret", "X-Amz-Signature", "sig"]
ARBITRARY = ["page", "q", "x", "utm_source", "Signature", "hmac_v2", "%7Bweird%7D", "state"]


def values_in(text: str) -> list[str]:
    return [f"v{n}-SECRET" for n in range(len(ISSUE_NAMES) + len(ARBITRARY)) if f"v{n}-" in text]


def test_every_query_value_is_masked_and_every_key_kept() -> None:
    names = ISSUE_NAMES + ARBITRARY
    query = "&".join(f"{name}=v{n}-SECRET" for n, name in enumerate(names))
    text = f"POST https://api.example.com/v1/hook?{query} failed"
    out = redact(text)
    assert values_in(out) == []
    expected = "&".join(f"{name}=***" for name in names)
    assert out == f"POST https://api.example.com/v1/hook?{expected} failed"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # any scheme, userinfo password masked, user kept
        ("redis://:rdpw-SECRET@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("amqp://guest:gpw-SECRET@mq:5672//", "amqp://guest:***@mq:5672//"),
        (
            "postgresql+psycopg://app:p@ss-SECRET@db:5432/x?sslpassword=sp-SECRET",
            "postgresql+psycopg://app:***@db:5432/x?sslpassword=***",
        ),
        ("wss://h/stream?token=t-SECRET", "wss://h/stream?token=***"),
        # percent-encoded values, values holding `=`, `/`, `:` and a whole nested URL
        ("https://h/?sig=ab%2Bcd%3D%3D-SECRET&n=1", "https://h/?sig=***&n=***"),
        ("https://h/cb?next=https://x/?token=t-SECRET&k=a=b-SECRET", "https://h/cb?next=***&k=***"),
        # fragments (OAuth implicit flow) and `;` separators
        ("https://h/cb#access_token=a-SECRET&state=s1", "https://h/cb#access_token=***&state=***"),
        ("https://h/p?a=1-SECRET#b=2-SECRET", "https://h/p?a=***#b=***"),
        ("https://h/p?a=1-SECRET;b=2-SECRET", "https://h/p?a=***;b=***"),
        # empty values and value-less keys are kept as they are
        ("https://h/p?flag&empty=&x=1-SECRET", "https://h/p?flag&empty=&x=***"),
        # a path with a query, as requests' errors name the URL; a bare query starting a word
        (
            "Max retries exceeded with url: /hook?key=k-SECRET (Caused by X)",
            "Max retries exceeded with url: /hook?key=***",
        ),
        ("params ?client_secret=c-SECRET&a=b", "params ?client_secret=***&a=***"),
        # quoted in a repr
        ("url='http://h:9/p?sig=s-SECRET', x", "url='http://h:9/p?sig=***', x"),
    ],
)
def test_urls_in_text(text: str, expected: str) -> None:
    out = redact(text)
    assert "SECRET" not in out
    assert out.startswith(expected) or out == expected, out


def test_several_urls_on_one_line_each_redacted() -> None:
    text = (
        "tried https://a.example/x?access_token=one-SECRET then "
        "http://b.example:8080/y?X-Amz-Signature=two-SECRET&X-Amz-Date=20240101 and "
        "redis://u:three-SECRET@c:6379/1, giving up"
    )
    assert redact(text) == (
        "tried https://a.example/x?access_token=*** then "
        "http://b.example:8080/y?X-Amz-Signature=***&X-Amz-Date=*** and "
        "redis://u:***@c:6379/1, giving up"
    )


def test_a_url_in_a_real_exception_message() -> None:
    url = "http://127.0.0.1:1/hook?access_token=tok-SECRET&password=pw-SECRET&page=2"
    with pytest.raises(requests.ConnectionError) as caught:
        requests.post(url, timeout=2)
    message = f"{type(caught.value).__name__}: {caught.value}"
    assert "tok-SECRET" in message  # what would be stored without redaction
    out = redact(message)
    assert "SECRET" not in out
    assert "/hook?access_token=***&password=***&page=***" in out


@pytest.mark.parametrize(
    "text",
    [
        "",
        "pipeline p1 executed in 12.5 ms",
        "is it a/b? yes, 50% & more; #1 issue",
        "token=abc password=hunter2 (not a URL: left for the structured-field masking)",
        "what? a=b",
        "HTTP 503",
        "ratio 3/4#",
        "email me: someone@example.com, or mailto:x@y",
        "https://example.com/plain/path",
        "https://example.com:8443/p#section-2",
        'a JSON {"x": [1, 2], "y": "z"}',
    ],
)
def test_text_without_url_credentials_is_untouched(text: str) -> None:
    assert redact(text) == text


def test_redact_data_masks_nested_values_and_secret_keys() -> None:
    data = {
        "attempts": [{"error": "ConnectionError: /h?sig=s-SECRET", "ms": 2.5}],
        "status": 503,
        "nested": {"api_key": "k-SECRET", "ok": True, "none": None},
        "when": ("https://h/?a=a-SECRET",),
    }
    out = redact_data(data)
    assert "SECRET" not in json.dumps(out)
    assert out["status"] == 503 and out["nested"]["ok"] is True and out["nested"]["none"] is None
    assert out["attempts"][0] == {"error": "ConnectionError: /h?sig=***", "ms": 2.5}


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()])
def test_warning_log_lines_are_redacted(formatter: logging.Formatter) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.redaction.{type(formatter).__name__}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        log_event(
            logger,
            "pipeline_executed",
            logging.WARNING,
            error="ConnectionError: url: /hook?client_secret=c-SECRET&sig=%22q-SECRET%22",
            attempts=[{"url": "https://h/?X-Amz-Signature=a-SECRET"}],
            secret="plain-SECRET",
        )
        logger.warning("free text https://h/x?key=k-SECRET")
        try:
            raise RuntimeError("boom at https://u:pw-SECRET@h/p?password=p-SECRET")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert "SECRET" not in out, out
    assert "client_secret=***" in out and "X-Amz-Signature=***" in out and "key=***" in out
    if isinstance(formatter, JsonFormatter):
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert [line["level"] for line in lines] == ["WARNING", "WARNING", "ERROR"]
        assert lines[0]["secret"] == "***"


@pytest.mark.parametrize(
    "text",
    [
        "/" * 100_000 + " ?a=b",
        "a" * 100_000 + "?",
        "(?" * 50_000,
        "u:" * 50_000 + "http://" + "a:" * 50_000 + "@?",
        "x=1&" * 25_000 + " /p?" + "a=1&" * 25_000,
    ],
)
def test_time_is_linear_on_hostile_text(text: str) -> None:
    """No input makes redaction quadratic (a 100 kB error message must not stall a worker)."""
    import time

    started = time.perf_counter()
    redact(text)
    assert time.perf_counter() - started < 0.5
