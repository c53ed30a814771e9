"""The explicit generator registry: names map to classes, mistakes fail loudly at start-up."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from generators.base import BaseSignalGenerator


class RegistryError(ValueError):
    """A duplicate or unknown generator name; the message names the culprit."""


class GeneratorRegistry:
    def __init__(self) -> None:
        self._classes: dict[str, type[BaseSignalGenerator[Any]]] = {}

    def register(self, cls: type[BaseSignalGenerator[Any]]) -> type[BaseSignalGenerator[Any]]:
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise RegistryError(f"generator class {cls.__qualname__} has no `name`")
        if name in self._classes:
            other = self._classes[name]
            raise RegistryError(
                f"generator name {name!r} registered twice: {other.__module__}.{other.__qualname__}"
                f" and {cls.__module__}.{cls.__qualname__}"
            )
        for attribute in ("signal_type", "config_model"):
            if not hasattr(cls, attribute):
                raise RegistryError(f"generator {name!r} ({cls.__qualname__}) lacks `{attribute}`")
        self._classes[name] = cls
        return cls

    def get(self, name: str) -> type[BaseSignalGenerator[Any]]:
        try:
            return self._classes[name]
        except KeyError:
            known = ", ".join(sorted(self._classes)) or "none"
            raise RegistryError(f"unknown generator type {name!r} (known: {known})") from None

    def __contains__(self, name: object) -> bool:
        return name in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._classes))

    def names(self) -> list[str]:
        return sorted(self._classes)
