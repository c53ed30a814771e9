"""Reading `config/` files. Every mistake stops start-up with the file and the field at fault."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from generators import BaseSignalGenerator, GeneratorRegistry, RegistryError, default_registry
from schemas.config import GeneratorEntry, GeneratorsConfig, WatchlistConfig
from signalgen.settings import Settings


class ConfigError(ValueError):
    """Configuration that cannot run. The message names the file and the field."""


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice")
        out[key] = value
    return out


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(p) for p in item["loc"]) or "(top level)"
        parts.append(f"{location}: {item['msg']}")
    return "; ".join(parts)


M = TypeVar("M", bound=BaseModel)


def load_json_model(path: Path, model: type[M]) -> M:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None


def load_watchlist(path: Path) -> WatchlistConfig:
    return load_json_model(path, WatchlistConfig)


@dataclass(frozen=True)
class GeneratorSpec:
    """A configured, validated generator instance ready to schedule and run."""

    name: str
    entry: GeneratorEntry
    generator: BaseSignalGenerator[Any]

    @property
    def interval_seconds(self) -> int:
        return self.entry.interval_seconds


#: Environment overrides of the original architecture: generator type → Settings attribute.
INTERVAL_OVERRIDES = {
    "mock": "mock_generator_interval_seconds",
    "golden_cross": "golden_cross_check_interval_seconds",
}


def load_generators(
    settings: Settings,
    registry: GeneratorRegistry | None = None,
) -> dict[str, GeneratorSpec]:
    """Every configured generator (enabled or not), validated against the registry.

    Raises ConfigError naming the file and field on any mistake.
    """
    registry = registry or default_registry()
    path = settings.generators_config_path
    config = load_json_model(path, GeneratorsConfig)
    watchlist: WatchlistConfig | None = None
    specs: dict[str, GeneratorSpec] = {}
    for name, entry in config.generators.items():
        try:
            cls = registry.get(entry.type)
        except RegistryError as exc:
            raise ConfigError(f"{path}: generators.{name}.type: {exc}") from None
        override = INTERVAL_OVERRIDES.get(entry.type)
        if override and getattr(settings, override) is not None:
            entry = entry.model_copy(update={"interval_seconds": getattr(settings, override)})
        if entry.type == "mock" and settings.mock_generator_enabled is not None:
            entry = entry.model_copy(update={"enabled": settings.mock_generator_enabled})
        try:
            generator_config = cls.config_model.model_validate(entry.settings)
        except ValidationError as exc:
            raise ConfigError(f"{path}: generators.{name}.settings: {_describe(exc)}") from None
        tickers = generator_config.tickers
        if tickers is None and cls.inputs != "signals":
            if watchlist is None:
                watchlist = load_watchlist(settings.watchlist_config_path)
            tickers = watchlist.tickers
        generator = cls(generator_config, source=name, tickers=tuple(tickers or ()))
        specs[name] = GeneratorSpec(name=name, entry=entry, generator=generator)
    return specs


def enabled_generators(settings: Settings) -> dict[str, GeneratorSpec]:
    return {name: spec for name, spec in load_generators(settings).items() if spec.entry.enabled}


def mock_generators_outside_dev(settings: Settings) -> list[str]:
    """Names of the enabled `mock` generators when not under `signalgen dev` (start-up warns:
    their random signals reach pipelines that opt in to mock signals)."""
    if settings.signalgen_dev:
        return []
    return sorted(
        name for name, spec in enabled_generators(settings).items() if spec.entry.type == "mock"
    )


def warn_mock_outside_dev(settings: Settings) -> None:
    """Log `mock_generator_enabled` (WARNING) if a mock generator runs outside dev."""
    import logging

    from signalgen.logs import log_event

    names = mock_generators_outside_dev(settings)
    if names:
        log_event(
            logging.getLogger("signalgen.config"),
            "mock_generator_enabled",
            logging.WARNING,
            generators=names,
            hint=(
                "random test signals outside `signalgen dev`: they reach only pipelines whose "
                "scanner has include_mock=true; disable them in "
                f"{settings.generators_config_path} or set MOCK_GENERATOR_ENABLED=0"
            ),
        )
