"""Configuration files: the shipped config loads; every mistake names the file and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from generators.golden_cross import GoldenCrossSignalGenerator
from generators.mock import MockSignalGenerator
from signalgen.config import ConfigError, enabled_generators, load_generators, load_watchlist
from signalgen.paths import CONFIG_DIR
from signalgen.settings import Settings

WATCHLIST = {"version": "1.0", "description": "test", "tickers": ["AAPL", "BRK.B", "SPY"]}


def golden_entry(**settings: object) -> dict[str, object]:
    return {"type": "golden_cross", "interval_seconds": 300, "settings": settings}


def write(
    directory: Path,
    generators: object,
    watchlist: object = WATCHLIST,
) -> Settings:
    gen_path, watch_path = directory / "generators.json", directory / "watchlist.json"
    gen_path.write_text(generators if isinstance(generators, str) else json.dumps(generators))
    watch_path.write_text(watchlist if isinstance(watchlist, str) else json.dumps(watchlist))
    return Settings(GENERATORS_CONFIG_PATH=gen_path, WATCHLIST_CONFIG_PATH=watch_path)


def failure(settings: Settings) -> str:
    with pytest.raises(ConfigError) as caught:
        load_generators(settings)
    return str(caught.value)


def test_shipped_config_loads_both_generators_with_spec_defaults() -> None:
    settings = Settings(
        GENERATORS_CONFIG_PATH=CONFIG_DIR / "generators.json",
        WATCHLIST_CONFIG_PATH=CONFIG_DIR / "watchlist.json",
    )
    specs = load_generators(settings)
    kinds = {type(spec.generator) for spec in specs.values()}
    assert {MockSignalGenerator, GoldenCrossSignalGenerator} <= kinds
    golden = next(s for s in specs.values() if isinstance(s.generator, GoldenCrossSignalGenerator))
    assert golden.generator.lookback() == 205
    watchlist = load_watchlist(CONFIG_DIR / "watchlist.json").tickers
    assert golden.generator.tickers == watchlist


def test_instances_get_watchlist_or_own_tickers_and_env_interval(tmp_path: Path) -> None:
    settings = write(
        tmp_path,
        {
            "generators": {
                "gc": golden_entry(sma_short=20, sma_long=50),
                "gc_spy": golden_entry(tickers=["SPY"]) | {"enabled": False},
                "mock_generator": {
                    "type": "mock",
                    "interval_seconds": 60,
                    "settings": {"emission_probability": 0.2, "seed": 7},
                },
            }
        },
    )
    specs = load_generators(settings)
    assert specs["gc"].generator.tickers == ("AAPL", "BRK.B", "SPY")
    assert specs["gc"].generator.source == "gc"
    assert specs["gc"].generator.config.sma_short == 20
    assert specs["gc_spy"].generator.tickers == ("SPY",)
    assert specs["mock_generator"].generator.config.seed == 7
    assert set(enabled_generators(settings)) == {"gc", "mock_generator"}
    overridden = Settings(
        GENERATORS_CONFIG_PATH=settings.generators_config_path,
        WATCHLIST_CONFIG_PATH=settings.watchlist_config_path,
        GOLDEN_CROSS_CHECK_INTERVAL_SECONDS=60,
    )
    assert load_generators(overridden)["gc"].interval_seconds == 60
    assert load_generators(overridden)["mock_generator"].interval_seconds == 60


def test_unknown_generator_type(tmp_path: Path) -> None:
    message = failure(
        write(tmp_path, {"generators": {"x": {"type": "golden_crosss", "interval_seconds": 60}}})
    )
    assert "generators.json" in message
    assert "generators.x.type" in message
    assert "golden_crosss" in message and "golden_cross" in message


@pytest.mark.parametrize("text", ['{"tickers": ["AAPL",]}', "", "[1, 2"])
def test_malformed_watchlist_json(tmp_path: Path, text: str) -> None:
    message = failure(write(tmp_path, {"generators": {"gc": golden_entry()}}, watchlist=text))
    assert "watchlist.json" in message
    assert "invalid JSON at line" in message


@pytest.mark.parametrize(
    ("watchlist", "field"),
    [
        ({"version": "1.0"}, "tickers"),
        ({"tickers": []}, "tickers"),
        ({"tickers": "AAPL"}, "tickers"),
        ({"tickers": ["AAPL", "aapl"]}, "tickers.1"),
        ({"tickers": ["AAPL", ""]}, "tickers.1"),
        ({"tickers": ["AAPL", "AAPL"]}, "tickers"),
    ],
)
def test_bad_watchlist_names_file_and_field(tmp_path: Path, watchlist: object, field: str) -> None:
    message = failure(write(tmp_path, {"generators": {"gc": golden_entry()}}, watchlist))
    assert "watchlist.json" in message
    assert f"{field}:" in message


@pytest.mark.parametrize("interval", [-300, 0])
def test_non_positive_interval(tmp_path: Path, interval: int) -> None:
    message = failure(
        write(
            tmp_path, {"generators": {"gc": {"type": "golden_cross", "interval_seconds": interval}}}
        )
    )
    assert "generators.json" in message
    assert "generators.gc.interval_seconds" in message


def test_negative_interval_from_environment_is_refused() -> None:
    with pytest.raises(ValueError, match="GOLDEN_CROSS_CHECK_INTERVAL_SECONDS"):
        Settings(GOLDEN_CROSS_CHECK_INTERVAL_SECONDS=-5)


@pytest.mark.parametrize(
    ("tickers", "text"),
    [
        (["aapl"], "upper case"),
        ([""], "non-empty"),
        ([], "at least 1"),
    ],
)
def test_bad_ticker_in_generator_settings(tmp_path: Path, tickers: list[str], text: str) -> None:
    message = failure(write(tmp_path, {"generators": {"gc": golden_entry(tickers=tickers)}}))
    assert "generators.json" in message
    assert "generators.gc.settings" in message and "tickers" in message
    assert text in message


@pytest.mark.parametrize(
    ("settings", "field", "text"),
    [
        ({"sma_short": 200, "sma_long": 50}, "generators.gc.settings", "less than sma_long"),
        ({"timeframe": "H"}, "timeframe", "only 'D'"),
        ({"lookback_days": -1}, "lookback_days", "greater than 0"),
        ({"sma_shrot": 20}, "sma_shrot", "Extra inputs"),
    ],
)
def test_bad_golden_cross_settings(
    tmp_path: Path, settings: dict[str, object], field: str, text: str
) -> None:
    message = failure(write(tmp_path, {"generators": {"gc": golden_entry(**settings)}}))
    assert "generators.json" in message and field in message and text in message


def test_bad_mock_settings(tmp_path: Path) -> None:
    message = failure(
        write(
            tmp_path,
            {
                "generators": {
                    "m": {
                        "type": "mock",
                        "interval_seconds": 60,
                        "settings": {"emission_probability": 2, "bias_options": ["UP"]},
                    }
                }
            },
        )
    )
    assert "generators.m.settings" in message
    assert "emission_probability" in message and "bias_options" in message


def test_duplicate_key(tmp_path: Path) -> None:
    text = (
        '{"generators": {"gc": {"type": "golden_cross", "interval_seconds": 300},'
        ' "gc": {"type": "mock", "interval_seconds": 60}}}'
    )
    message = failure(write(tmp_path, text))
    assert "generators.json" in message
    assert "'gc' appears twice" in message
    watch = failure(
        write(
            tmp_path,
            {"generators": {"gc": golden_entry()}},
            '{"tickers": ["AAPL"], "tickers": ["SPY"]}',
        )
    )
    assert "watchlist.json" in watch and "'tickers' appears twice" in watch


def test_bad_instance_name_and_missing_file(tmp_path: Path) -> None:
    message = failure(write(tmp_path, {"generators": {"Golden Cross": golden_entry()}}))
    assert "generators.json" in message and "Golden Cross" in message
    missing = Settings(GENERATORS_CONFIG_PATH=tmp_path / "nope.json")
    assert "nope.json: file not found" in failure(missing)
