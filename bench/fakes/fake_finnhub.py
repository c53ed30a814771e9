"""A local HTTP server answering like Finnhub's documented API, for tests (no network needed).

Endpoints under /api/v1: /stock/candle, /quote, /company-news. Each path has a mode:

- "ok": documented answers from the data given (`candles`, `quotes`, `news`); /quote of an
  unknown symbol answers all zeros with t=0, as Finnhub does
- "no_data": {"s": "no_data"} (candles), all zeros (quote), [] (news)
- "403": {"error": "You don't have access to this resource."}
- "429": {"error": "API limit reached. Please try again later. Remaining Limit: 0"}
- "malformed": HTTP 200, Content-Type application/json, a body that is not JSON
- "missing_fields": HTTP 200 JSON missing documented fields
- "slow": sleeps `slow_seconds` (past the client's timeout), then answers as "ok"; with a large
  `slow_seconds` it is a provider that hangs (stop() wakes every held request)
- "500": a server error

`retry_after` (e.g. "2") is sent as the Retry-After header of every 429. `real_limit = (calls,
seconds)` makes the server enforce an account limit of its own, as Finnhub does, whatever the
client was configured with: a request beyond `calls` answered ones in the last `seconds` gets 429
with Retry-After (whole seconds until a slot frees). `statuses(path)` lists the status of each
answer sent, so tests count 429s at the server.

`set_mode(path, "429", "429", "ok")` plays modes in order, one per request, the last sticking.
A request without the expected `token` query parameter gets 401 like Finnhub. Every request is
recorded (path, query, arrival time) for assertions.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bench.fakes.fake_server import FakeHandler, FakeServer
from signalgen.marketdata.store import BarRow

PREFIX = "/api/v1"
PATHS = ("/stock/candle", "/quote", "/company-news")
MODES = ("ok", "no_data", "403", "429", "malformed", "missing_fields", "slow", "500")


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    query: dict[str, str]
    at: float  # time.time() on arrival


#: A daily candle the server holds: a bar as sources produce it.
Candle = BarRow


class FakeFinnhub(FakeServer):
    """Use as `with FakeFinnhub(token="k") as server:`; point clients at `server.base_url`."""

    mode_kind = "path"
    mode_keys = PATHS
    modes = MODES
    url_prefix = PREFIX

    def __init__(self, token: str = "test-token", *, slow_seconds: float = 3.0) -> None:
        super().__init__()
        self.token = token
        self.slow_seconds = slow_seconds
        self.candles: dict[str, list[Candle]] = {}
        self.quotes: dict[str, dict[str, float]] = {}
        self.news: dict[str, list[dict[str, Any]]] = {}
        self.requests: list[RecordedRequest] = []
        self.retry_after: str | None = None
        self.real_limit: tuple[int, float] | None = None
        self._answered: list[tuple[str, int, float]] = []  # (path, status, time) of each answer
        self._granted: list[float] = []  # arrival times of requests within real_limit

    # -- control -------------------------------------------------------------------------

    def count(self, path: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if path is None or r.path == path)

    def timestamps(self, path: str | None = None) -> list[float]:
        with self._lock:
            return sorted(r.at for r in self.requests if path is None or r.path == path)

    def statuses(self, path: str | None = None, *, since: float = 0.0) -> list[int]:
        """Statuses of the answers sent (in order), to requests that arrived at or after `since`."""
        with self._lock:
            return [
                st for p, st, at in self._answered if (path is None or p == path) and at >= since
            ]

    def _record_answer(self, path: str, status: int, arrived: float) -> None:
        with self._lock:
            self._answered.append((path, status, arrived))

    def _over_real_limit(self, arrived: float) -> float | None:
        """Seconds until a slot frees when `real_limit` is exceeded, else None (and counted)."""
        if self.real_limit is None:
            return None
        calls, seconds = self.real_limit
        with self._lock:
            self._granted = [t for t in self._granted if t > arrived - seconds]
            if len(self._granted) >= calls:
                return self._granted[len(self._granted) - calls] + seconds - arrived
            self._granted.append(arrived)
            return None

    # -- answers -------------------------------------------------------------------------

    def answer(
        self, path: str, query: dict[str, str], arrived: float | None = None
    ) -> tuple[Any, ...]:
        """(status, content type, body) for one request, per the path's current mode."""
        wait = self._over_real_limit(time.time() if arrived is None else arrived)
        if wait is not None:
            return _limited({"Retry-After": str(max(1, math.ceil(wait)))})
        mode = self._next_mode(path)
        if mode == "slow":
            self._release.wait(self.slow_seconds)
            mode = "ok"
        if mode == "403":
            return _json(403, {"error": "You don't have access to this resource."})
        if mode == "429":
            return _limited({"Retry-After": self.retry_after} if self.retry_after else {})
        if mode == "500":
            return _json(500, {"error": "Internal server error"})
        if mode == "malformed":
            return 200, "application/json; charset=utf-8", b'{"c": [1.0, 2.0], "s": "ok'
        symbol = query.get("symbol", "")
        if path == "/stock/candle":
            return self._candles(symbol, query, mode)
        if path == "/quote":
            return self._quote(symbol, mode)
        return self._news(symbol, mode)

    def _candles(self, symbol: str, query: dict[str, str], mode: str) -> tuple[int, str, bytes]:
        if mode == "missing_fields":
            return _json(200, {"s": "ok", "t": [1_600_000_000], "c": [1.0]})
        if query.get("resolution") != "D":
            return _json(422, {"error": "this fake serves daily resolution only"})
        start, end = int(query["from"]), int(query["to"])
        rows = (
            [c for c in self.candles.get(symbol, []) if start <= _epoch(c.day) <= end]
            if mode == "ok"
            else []
        )
        if not rows:
            return _json(200, {"s": "no_data"})
        return _json(
            200,
            {
                "s": "ok",
                "t": [_epoch(c.day) for c in rows],
                "o": [c.open for c in rows],
                "h": [c.high for c in rows],
                "l": [c.low for c in rows],
                "c": [c.close for c in rows],
                "v": [c.volume for c in rows],
            },
        )

    def _quote(self, symbol: str, mode: str) -> tuple[int, str, bytes]:
        if mode == "missing_fields":
            return _json(200, {"c": 10.0, "h": 11.0})
        quote = self.quotes.get(symbol) if mode == "ok" else None
        if quote is None:
            return _json(
                200, {"c": 0, "d": None, "dp": None, "h": 0, "l": 0, "o": 0, "pc": 0, "t": 0}
            )
        body = {
            "d": quote["c"] - quote["pc"],
            "dp": 100 * (quote["c"] - quote["pc"]) / quote["pc"],
            **quote,
        }
        return _json(200, body)

    def _news(self, symbol: str, mode: str) -> tuple[int, str, bytes]:
        if mode == "missing_fields":
            return _json(200, [{"id": 1}])
        return _json(200, self.news.get(symbol, []) if mode == "ok" else [])


def _epoch(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def _limited(headers: dict[str, str]) -> tuple[Any, ...]:
    body = {"error": "API limit reached. Please try again later. Remaining Limit: 0"}
    return (*_json(429, body), headers)


def _json(status: int, body: Any) -> tuple[int, str, bytes]:
    return status, "application/json; charset=utf-8", json.dumps(body).encode()


class _Handler(FakeHandler):
    fake: FakeFinnhub

    def do_GET(self) -> None:
        arrived = time.time()
        parts = urlsplit(self.path)
        # finnhub-python joins API_URL and "/quote" with a "/", so paths arrive as "//quote".
        path = re.sub("/+", "/", parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if not path.startswith(PREFIX + "/") or path[len(PREFIX) :] not in PATHS:
            self._send(404, "application/json", b'{"error": "not found"}')
            return
        path = path[len(PREFIX) :]
        with self.fake._lock:
            self.fake.requests.append(RecordedRequest(path, query, arrived))
        if query.get("token") != self.fake.token:
            self._send(*_json(401, {"error": "Invalid API key"}))
            self.fake._record_answer(path, 401, arrived)
            return
        answer = self.fake.answer(path, query, arrived)
        self.fake._record_answer(path, answer[0], arrived)
        self._send(*answer)


FakeFinnhub.handler = _Handler


@contextmanager
def fake_finnhub(token: str = "test-token", **kwargs: Any) -> Iterator[FakeFinnhub]:
    with FakeFinnhub(token, **kwargs) as server:
        yield server


def candles_from_rows(rows: Sequence[Any]) -> list[Candle]:
    """Candles from objects with day/open/high/low/close/volume (e.g. BarRow)."""
    return [Candle(r.day, r.open, r.high, r.low, r.close, r.volume) for r in rows]
