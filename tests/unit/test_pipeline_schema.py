"""Pipeline specs: what a signal or periodic pipeline needs, and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from schemas.pipeline import PipelineSpec, describe_errors

SECRET = "0123456789abcdef-secret"


def spec(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "owner": "u1",
        "name": "p",
        "trigger_mode": "signal",
        "scanner": {"tickers": ["AAPL"], "signal_types": ["golden_cross"]},
    }
    data.update(overrides)
    return data


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        PipelineSpec.model_validate(data)
    return describe_errors(info.value)


def test_signal_pipeline_defaults_to_record_executor() -> None:
    pipeline = PipelineSpec.model_validate(spec())
    assert pipeline.executor.kind == "record"
    assert pipeline.enabled is True


def test_signal_pipeline_needs_scanner() -> None:
    assert "scanner: required" in error_of(spec(scanner=None))


def test_periodic_pipeline_needs_schedule() -> None:
    assert "schedule: required" in error_of(spec(trigger_mode="periodic", scanner=None))


def test_scanner_needs_tickers_or_watchlist_not_both() -> None:
    assert "scanner" in error_of(spec(scanner={"tickers": []}))
    assert "scanner" in error_of(spec(scanner={"tickers": ["AAPL"], "watchlist": True}))
    PipelineSpec.model_validate(spec(scanner={"watchlist": True}))


def test_lower_case_ticker_named() -> None:
    message = error_of(spec(scanner={"tickers": ["aapl"]}))
    assert message.startswith("scanner.tickers.0:") and "upper case" in message


def test_unknown_signal_type_and_bias_named() -> None:
    assert error_of(spec(scanner={"tickers": ["A"], "signal_types": ["nope"]})).startswith(
        "scanner.signal_types.0:"
    )
    assert error_of(spec(scanner={"tickers": ["A"], "biases": ["UP"]})).startswith(
        "scanner.biases.0:"
    )


def test_min_confidence_range() -> None:
    assert error_of(spec(scanner={"tickers": ["A"], "min_confidence": 1.5})).startswith(
        "scanner.min_confidence:"
    )


@pytest.mark.parametrize("expression", ["61 * * * *", "* * * *", "* * 30 2 *", "a b c d e"])
def test_invalid_crontab_named(expression: str) -> None:
    message = error_of(
        spec(trigger_mode="periodic", scanner=None, schedule={"crontab": expression})
    )
    assert message.startswith("schedule.crontab:"), message


def test_valid_crontab_and_interval() -> None:
    cron = PipelineSpec.model_validate(
        spec(trigger_mode="periodic", scanner=None, schedule={"crontab": "*/15 9-16 * * 1-5"})
    )
    assert cron.schedule is not None
    minutes, hours, _, _, weekdays = cron.schedule.cron_fields()
    assert minutes == {0, 15, 30, 45} and hours == set(range(9, 17))
    assert weekdays == {1, 2, 3, 4, 5}
    PipelineSpec.model_validate(
        spec(trigger_mode="periodic", scanner=None, schedule={"interval_seconds": 60})
    )


def test_schedule_needs_exactly_one_kind() -> None:
    assert "schedule" in error_of(spec(trigger_mode="periodic", scanner=None, schedule={}))
    assert "schedule" in error_of(
        spec(
            trigger_mode="periodic",
            scanner=None,
            schedule={"interval_seconds": 5, "crontab": "* * * * *"},
        )
    )


def test_unknown_executor_named() -> None:
    assert error_of(spec(executor={"kind": "carrier-pigeon"})).startswith("executor:")


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "file:///etc/passwd", "not a url"])
def test_webhook_url_must_be_http(url: str) -> None:
    message = error_of(spec(executor={"kind": "webhook", "url": url, "secret": SECRET}))
    assert message.startswith("executor.url:"), message


def test_webhook_executor_settings_round_trip() -> None:
    pipeline = PipelineSpec.model_validate(
        spec(
            executor={
                "kind": "webhook",
                "url": "https://hooks.example.com/x",
                "secret": SECRET,
                "timeout_seconds": 2,
            }
        )
    )
    config = pipeline.executor_config()
    assert config["secret"] == SECRET and config["url"] == "https://hooks.example.com/x"
    assert config["timeout_seconds"] == 2
    assert SECRET not in repr(pipeline)


def test_webhook_secret_too_short_named() -> None:
    assert error_of(
        spec(executor={"kind": "webhook", "url": "http://h/", "secret": "x"})
    ).startswith("executor.secret:")


def test_celery_executor_needs_task_and_queue() -> None:
    assert "executor.queue" in error_of(spec(executor={"kind": "celery", "task": "trade.run"}))
    PipelineSpec.model_validate(
        spec(executor={"kind": "celery", "task": "trade.run", "queue": "backend"})
    )


def test_unknown_field_refused() -> None:
    assert error_of(spec(colour="red")).startswith("colour:")
