"""Issue 12: the mock generator ships disabled; MOCK_GENERATOR_ENABLED turns it on (as
`signalgen dev` does), and outside dev start-up warns."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from signalgen.config import enabled_generators, mock_generators_outside_dev, warn_mock_outside_dev
from signalgen.paths import CONFIG_DIR
from signalgen.settings import Settings


def shipped(**env: str) -> Settings:
    return Settings(
        GENERATORS_CONFIG_PATH=CONFIG_DIR / "generators.json",
        WATCHLIST_CONFIG_PATH=CONFIG_DIR / "watchlist.json",
        **env,  # type: ignore[arg-type]
    )


def test_the_shipped_config_has_the_mock_generator_off() -> None:
    assert "mock_generator" not in enabled_generators(shipped())
    assert mock_generators_outside_dev(shipped()) == []


@pytest.mark.parametrize(("value", "enabled"), [("1", True), ("true", True), ("0", False)])
def test_mock_generator_enabled_overrides_the_file(value: str, enabled: bool) -> None:
    assert ("mock_generator" in enabled_generators(shipped(MOCK_GENERATOR_ENABLED=value))) is (
        enabled
    )


def test_bad_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="MOCK_GENERATOR_ENABLED"):
        shipped(MOCK_GENERATOR_ENABLED="perhaps")


def test_enabled_outside_dev_warns_and_dev_does_not(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="signalgen.config"):
        warn_mock_outside_dev(shipped(MOCK_GENERATOR_ENABLED="1"))
    [record] = [r for r in caplog.records if getattr(r, "event", None) == "mock_generator_enabled"]
    assert record.levelno == logging.WARNING
    fields = record.fields  # type: ignore[attr-defined]
    assert fields["generators"] == ["mock_generator"] and "include_mock" in fields["hint"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="signalgen.config"):
        warn_mock_outside_dev(shipped(MOCK_GENERATOR_ENABLED="1", SIGNALGEN_DEV="1"))
        warn_mock_outside_dev(shipped())
    assert not [r for r in caplog.records if getattr(r, "event", None) == "mock_generator_enabled"]


def test_signalgen_dev_turns_the_mock_generator_on_for_its_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from signalgen.interfaces.dev import DevOptions, DevService

    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    env = {
        "GENERATORS_CONFIG_PATH": str(config / "generators.json"),
        "WATCHLIST_CONFIG_PATH": str(config / "watchlist.json"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}",
        "BROKER_URL": "redis://127.0.0.1:1/0",  # not contacted by prepare()
        "PATH": "/usr/bin:/bin",
    }
    monkeypatch.chdir(tmp_path)
    service = DevService(DevOptions(), env=dict(env))
    try:
        service.prepare()
        children = dict(service.env)
    finally:
        service.shutdown()
    assert children["MOCK_GENERATOR_ENABLED"] == "1" and children["SIGNALGEN_DEV"] == "1"
    settings = Settings(
        GENERATORS_CONFIG_PATH=config / "generators.json",
        WATCHLIST_CONFIG_PATH=config / "watchlist.json",
        MOCK_GENERATOR_ENABLED=children["MOCK_GENERATOR_ENABLED"],  # type: ignore[arg-type]
        SIGNALGEN_DEV=children["SIGNALGEN_DEV"],  # type: ignore[arg-type]
    )
    assert "mock_generator" in enabled_generators(settings)
    assert mock_generators_outside_dev(settings) == []
