"""What the history providers that answer JSON to a (free) API key share: the key checked,
the base URL, the HTTP getter, the timeout, and one GET read as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from signalgen.marketdata.history import (
    HttpGetter,
    ProviderDataError,
    http_get,
    parse_day,
    parse_number,
    raise_for_status,
)
from signalgen.marketdata.store import BarRow


class KeyedJsonHistory:
    """A `HistorySource` over an HTTP JSON API with a key. `base_url` (its `*_BASE_URL`) may
    point at a local server; subclasses name the provider, its key's variable, and defaults."""

    name: str
    #: The environment variable of the key, named when the key is empty.
    key_variable: ClassVar[str]
    default_base_url: ClassVar[str]
    default_timeout: ClassVar[float]

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        *,
        get: HttpGetter | None = None,
        timeout: float | None = None,
    ) -> None:
        if not api_key.strip():
            raise ValueError(f"{self.key_variable} is empty")
        self._api_key = api_key
        self.base_url = (base_url if base_url is not None else self.default_base_url).rstrip("/")
        self._get = get or http_get()
        self.timeout = timeout if timeout is not None else self.default_timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def _get_json(
        self,
        path: str,
        params: Mapping[str, str],
        headers: Mapping[str, str],
        ticker: str,
        timeout: float | None,
    ) -> Any:
        """GET `base_url + path`: the answer's JSON; an HTTP error or a body that is not JSON
        raises what `raise_for_status` says, or ProviderDataError."""
        answer = self._get(self.base_url + path, params, headers, timeout or self.timeout)
        raise_for_status(answer, self.name, ticker)
        try:
            return json.loads(answer.text)
        except ValueError:
            raise ProviderDataError(f"{self.name}: the answer for {ticker} is not JSON") from None


def parse_bar(
    values: Any,
    fields: Sequence[str],
    where: str,
    provider: str,
    *,
    day: Any = None,
    day_field: str | None = None,
) -> BarRow:
    """Pure: one bar of a provider's JSON answer. `values` must be an object; its day is `day`,
    or its own `day_field`; its open, high, low, close and volume are the `fields` it names."""
    if not isinstance(values, dict):
        raise ProviderDataError(f"{provider}: {where} is not an object")
    when = parse_day(values.get(day_field) if day_field else day, where, provider)
    o, h, low, c, v = (parse_number(values.get(name), name, where, provider) for name in fields)
    return BarRow(when, o, h, low, c, v)
