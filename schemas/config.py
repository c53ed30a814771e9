"""Configuration files as models: `config/watchlist.json` and `config/generators.json`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.signal import Ticker

INSTANCE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.\-]{0,99}$"


class WatchlistConfig(BaseModel):
    """The original's watchlist format: version, description, tickers."""

    model_config = ConfigDict(frozen=True, extra="allow")

    version: str = "1.0"
    description: str = ""
    tickers: tuple[Ticker, ...] = Field(min_length=1)

    @field_validator("tickers")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        seen: set[str] = set()
        for ticker in value:
            if ticker in seen:
                raise ValueError(f"ticker {ticker!r} is listed twice")
            seen.add(ticker)
        return value


class GeneratorEntry(BaseModel):
    """One configured generator instance. Its key in the file is its name (the signal source)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str = Field(min_length=1)
    enabled: bool = True
    interval_seconds: int = Field(gt=0, le=7 * 24 * 3600)
    #: The generator class's own settings, validated by its `config_model`.
    settings: dict[str, Any] = Field(default_factory=dict)


class GeneratorsConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = "1.0"
    description: str = ""
    generators: dict[str, GeneratorEntry]

    @field_validator("generators")
    @classmethod
    def _names(cls, value: dict[str, GeneratorEntry]) -> dict[str, GeneratorEntry]:
        import re

        for name in value:
            if not re.match(INSTANCE_NAME_PATTERN, name):
                raise ValueError(
                    f"generator name {name!r} must be lower-case letters, digits, _ . -"
                )
        return value
