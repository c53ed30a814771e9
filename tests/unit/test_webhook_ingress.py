"""Webhook ingress in-process: SQLite, Kombu's in-memory broker, fakeredis for the rate limit.
The same router on real Redis/PostgreSQL (latency, concurrency) is in
tests/integration/test_webhook_ingress.py."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import fakeredis
import httpx
import pytest
from fastapi import FastAPI
from kombu import Connection, Queue
from sqlalchemy import func, select

from schemas.external import WebhooksConfig
from schemas.signal import Bias, Signal, SignalType
from signalgen.bus import KombuPublisher
from signalgen.bus.topology import SIGNAL_EXCHANGE
from signalgen.ingress.webhooks import (
    WebhookIngress,
    sign,
    signal_source,
    signature_matches,
    token_matches,
)
from signalgen.interfaces.http import ingress as ingress_module
from signalgen.storage import Database
from signalgen.storage.models import SignalRecord

TV_SECRET = "tv-secret-0123456789abcdef"
HMAC_SECRET = "hmac-secret-0123456789abcdef"


def config(calls: int = 1000, max_body_bytes: int = 2048) -> WebhooksConfig:
    return WebhooksConfig.model_validate(
        {
            "max_body_bytes": max_body_bytes,
            "sources": {
                "tv": {
                    "kind": "tradingview",
                    "secret": TV_SECRET,
                    "rate_limit": {"calls": calls, "period_seconds": 60},
                },
                "partner": {
                    "kind": "hmac",
                    "secret": HMAC_SECRET,
                    "rate_limit": {"calls": calls, "period_seconds": 60},
                },
                "unset": {"kind": "tradingview", "secret_env": "SG_TEST_UNSET_WEBHOOK_SECRET"},
                "off": {"kind": "tradingview", "secret": TV_SECRET, "enabled": False},
            },
        }
    )


@pytest.fixture
def bus() -> Iterator[tuple[Connection, Queue]]:
    connection = Connection("memory://")
    queue = Queue(
        f"test-webhooks-{uuid.uuid4().hex[:8]}", exchange=SIGNAL_EXCHANGE, routing_key="signal.#"
    )
    queue(connection.default_channel).declare()
    yield connection, queue
    connection.release()


class AsgiClient:
    """Synchronous calls into the ASGI app through httpx's ASGITransport (no server, no
    deprecated starlette AsgiClient)."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        import asyncio

        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                content = kwargs.get("content")
                if content is not None and not isinstance(content, bytes | str):
                    chunks = list(content)

                    async def stream() -> Any:
                        for chunk in chunks:
                            yield chunk

                    kwargs["content"] = stream()
                return await http.post(url, **kwargs)

        return asyncio.run(call())

    def __enter__(self) -> AsgiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.app.state.webhook_ingress.publisher.close()


def make_client(database: Database, **overrides: Any) -> AsgiClient:
    app = FastAPI()
    app.include_router(ingress_module.router)
    app.state.webhook_ingress = WebhookIngress(
        config=overrides.get("config", config()),
        database=database,
        publisher=KombuPublisher("memory://"),
        redis=fakeredis.FakeRedis(),
    )
    return AsgiClient(app)


@pytest.fixture
def client(sqlite_db: Database, bus: object) -> Iterator[AsgiClient]:
    with make_client(sqlite_db) as test_client:
        yield test_client


def received(bus: tuple[Connection, Queue]) -> list[Signal]:
    connection, queue = bus
    bound = queue(connection.default_channel)
    out = []
    while (message := bound.get(no_ack=True)) is not None:
        out.append(Signal.from_json(message.body))
    return out


def recorded(database: Database) -> int:
    with database.session() as session:
        return int(session.scalar(select(func.count()).select_from(SignalRecord)) or 0)


def alert(**fields: Any) -> dict[str, Any]:
    body = {
        "secret": TV_SECRET,
        "ticker": "AAPL",
        "action": "buy",
        "time": "2024-03-01T15:30:00Z",
        "price": 180.25,
        "interval": "1D",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def test_router_is_mounted_in_the_service() -> None:
    from signalgen.interfaces.http.app import ROUTERS

    assert "signalgen.interfaces.http.ingress" in ROUTERS


def test_valid_alert_becomes_an_external_signal_on_the_exchange(
    client: AsgiClient, bus: tuple[Connection, Queue], sqlite_db: Database
) -> None:
    response = client.post("/webhooks/tradingview/tv", json=alert(strategy="breakout"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "accepted" and body["published"] is True
    [signal] = received(bus)
    assert str(signal.signal_id) == body["signal_id"]
    assert signal.signal_type is SignalType.EXTERNAL
    assert signal.source == signal_source("tv") == "webhook.tv"
    assert signal.tickers == ("AAPL",)
    assert signal.routing_key == "signal.external.AAPL"
    assert signal.bias["AAPL"].bias is Bias.BULLISH
    assert signal.bias["AAPL"].confidence == 0.6  # the source's default
    assert signal.event_time == datetime(2024, 3, 1, 15, 30, tzinfo=UTC)
    assert signal.metadata["price"] == 180.25 and signal.metadata["strategy"] == "breakout"
    assert "secret" not in signal.to_json() and TV_SECRET not in signal.to_json()
    assert recorded(sqlite_db) == 1


def test_text_plain_json_is_accepted_as_tradingview_sends_it(
    client: AsgiClient, bus: tuple[Connection, Queue]
) -> None:
    # TradingView sends text/plain unless the message parses as JSON; read the body either way.
    response = client.post(
        "/webhooks/tradingview/tv",
        content=json.dumps(alert(action="SHORT")),
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 200, response.text
    assert received(bus)[0].bias["AAPL"].bias is Bias.BEARISH


def test_replayed_alert_yields_one_signal(
    client: AsgiClient, bus: tuple[Connection, Queue], sqlite_db: Database
) -> None:
    first = client.post("/webhooks/tradingview/tv", json=alert())
    again = client.post("/webhooks/tradingview/tv", json=alert())
    assert first.status_code == again.status_code == 200
    assert again.json() == {
        "status": "duplicate",
        "signal_id": first.json()["signal_id"],
        "published": False,
    }
    # With an alert id, the id is the identity: a different price is still the same alert.
    a = client.post("/webhooks/tradingview/tv", json=alert(alert_id="a-1", price=1.0))
    b = client.post("/webhooks/tradingview/tv", json=alert(alert_id="a-1", price=2.0))
    assert a.json()["status"] == "accepted" and b.json()["status"] == "duplicate"
    # Another bar time without an alert id is another alert.
    c = client.post("/webhooks/tradingview/tv", json=alert(time="2024-03-02T15:30:00Z"))
    assert c.json()["status"] == "accepted"
    assert len(received(bus)) == 3
    assert recorded(sqlite_db) == 3


@pytest.mark.parametrize("secret", ["wrong-secret-0123456789abcdef", "", None, 12345])
def test_wrong_or_missing_token_is_401(
    client: AsgiClient, bus: tuple[Connection, Queue], secret: object, sqlite_db: Database
) -> None:
    body = alert()
    body.pop("secret")
    if secret is not None:
        body["secret"] = secret
    response = client.post("/webhooks/tradingview/tv", json=body)
    assert response.status_code == 401
    assert received(bus) == [] and recorded(sqlite_db) == 0


def test_oversize_body_is_413(client: AsgiClient, bus: tuple[Connection, Queue]) -> None:
    response = client.post("/webhooks/tradingview/tv", json=alert(message="x" * 3000))
    assert response.status_code == 413
    # Chunked (no Content-Length) is cut off while streaming, too.
    chunks = iter([json.dumps(alert())[:-1].encode(), b" " * 4096, b"}"])
    response = client.post("/webhooks/tradingview/tv", content=chunks)
    assert response.status_code == 413
    assert received(bus) == []


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"ticker": None}, "ticker"),
        ({"ticker": "not a ticker!"}, "ticker"),
        ({"action": "hodl"}, "action"),
        ({"time": "yesterday"}, "time"),
        ({"time": "2024-03-01T15:30:00"}, "time"),  # naive
        ({"confidence": 1.5}, "confidence"),
        ({"price": "NaN"}, "price"),
        ({"tickr": "AAPL"}, "tickr"),
    ],
)
def test_malformed_alert_is_422_naming_the_field(
    client: AsgiClient, change: dict[str, Any], field: str, bus: tuple[Connection, Queue]
) -> None:
    body = alert(**{k: v for k, v in change.items() if v is not None})
    for key, value in change.items():
        if value is None:
            body.pop(key)
    response = client.post("/webhooks/tradingview/tv", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert response.json()["detail"][0]["loc"] == ["body", field]
    assert received(bus) == []


def test_body_that_is_not_json_is_422(client: AsgiClient) -> None:
    response = client.post(
        "/webhooks/tradingview/tv",
        content=b"AAPL crossed 180, buy!",
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 422 and response.json()["field"] == "body"
    response = client.post("/webhooks/tradingview/tv", json=["not", "an", "object"])
    assert response.status_code == 422 and response.json()["field"] == "body"


def test_unknown_disabled_or_unconfigured_sources(
    client: AsgiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SG_TEST_UNSET_WEBHOOK_SECRET", raising=False)
    assert client.post("/webhooks/tradingview/nope", json=alert()).status_code == 404
    assert client.post("/webhooks/tradingview/off", json=alert()).status_code == 404
    # A TradingView source is not reachable on the HMAC route, and vice versa.
    assert client.post("/webhooks/signals/tv", json=alert()).status_code == 404
    assert client.post("/webhooks/tradingview/partner", json=alert()).status_code == 404
    assert client.post("/webhooks/tradingview/unset", json=alert()).status_code == 503
    monkeypatch.setenv("SG_TEST_UNSET_WEBHOOK_SECRET", TV_SECRET)
    assert client.post("/webhooks/tradingview/unset", json=alert()).status_code == 200


def test_rate_limit_per_source_is_429(sqlite_db: Database, bus: tuple[Connection, Queue]) -> None:
    with make_client(sqlite_db, config=config(calls=3)) as limited:
        codes = [
            limited.post("/webhooks/tradingview/tv", json=alert(alert_id=f"r{i}")).status_code
            for i in range(5)
        ]
        assert codes == [200, 200, 200, 429, 429]
        refused = limited.post("/webhooks/tradingview/tv", json=alert(alert_id="r9"))
        assert int(refused.headers["Retry-After"]) >= 1
        # Another source has its own budget.
        body = json.dumps({"tickers": ["MSFT"], "bias": "BEARISH", "event_id": "e1"}).encode()
        other = limited.post(
            "/webhooks/signals/partner",
            content=body,
            headers={"X-Signature-256": sign(body, HMAC_SECRET)},
        )
        assert other.status_code == 200
    assert len(received(bus)) == 4


def test_signed_user_signal(client: AsgiClient, bus: tuple[Connection, Queue]) -> None:
    body = json.dumps(
        {
            "event_id": "evt-42",
            "tickers": ["MSFT", "nvda"],
            "bias": "bullish",
            "confidence": 0.8,
            "reasoning": "our model",
            "metadata": {"k": 1},
        }
    ).encode()
    response = client.post(
        "/webhooks/signals/partner",
        content=body,
        headers={"X-Signature-256": sign(body, HMAC_SECRET), "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    [signal] = received(bus)
    assert signal.tickers == ("MSFT", "NVDA") and signal.routing_key == "signal.external.multi"
    assert {b.bias for b in signal.bias.values()} == {Bias.BULLISH}
    assert signal.metadata["k"] == 1 and signal.metadata["event_id"] == "evt-42"
    again = client.post(
        "/webhooks/signals/partner",
        content=body,
        headers={"X-Signature-256": sign(body, HMAC_SECRET)},
    )
    assert again.json()["status"] == "duplicate"


@pytest.mark.parametrize("header", [None, "", "sha256=", "sha1=abc", "sha256=deadbeef"])
def test_bad_signature_is_401(client: AsgiClient, header: str | None) -> None:
    body = json.dumps({"tickers": ["MSFT"], "bias": "BEARISH"}).encode()
    headers = {} if header is None else {"X-Signature-256": header}
    assert (
        client.post("/webhooks/signals/partner", content=body, headers=headers).status_code == 401
    )
    # Signed, then altered by one byte.
    signature = sign(body, HMAC_SECRET)
    assert (
        client.post(
            "/webhooks/signals/partner",
            content=body.replace(b"MSFT", b"MSFU"),
            headers={"X-Signature-256": signature},
        ).status_code
        == 401
    )


def test_signed_but_malformed_user_signal_is_422(client: AsgiClient) -> None:
    body = json.dumps({"tickers": [], "bias": "BEARISH"}).encode()
    response = client.post(
        "/webhooks/signals/partner",
        content=body,
        headers={"X-Signature-256": sign(body, HMAC_SECRET)},
    )
    assert response.status_code == 422 and response.json()["field"] == "tickers"


def test_database_outage_is_503_so_the_sender_retries(
    bus: tuple[Connection, Queue], tmp_path: Any
) -> None:
    database = Database(f"sqlite:///{tmp_path / 'no-schema.db'}")  # no tables: inserts fail
    with make_client(database) as broken:
        response = broken.post("/webhooks/tradingview/tv", json=alert())
    assert response.status_code == 503
    assert received(bus) == []
    database.dispose()


def test_comparisons_are_exact() -> None:
    assert token_matches("abc", b"abc") and not token_matches("abd", b"abc")
    assert not token_matches("ab", b"abc")
    body = b'{"a":1}'
    assert signature_matches(body, sign(body, "k" * 16), b"k" * 16)
    assert signature_matches(
        body, sign(body, "k" * 16).upper().replace("SHA256", "sha256"), b"k" * 16
    )
    assert not signature_matches(body + b" ", sign(body, "k" * 16), b"k" * 16)


@pytest.mark.parametrize("ticker", ["NASDAQ:AAPL", "nasdaq:aapl", " NASDAQ:AAPL "])
def test_tradingview_exchange_prefix_becomes_the_symbol_with_the_exchange_kept(
    client: AsgiClient, bus: tuple[Connection, Queue], ticker: str
) -> None:
    """Issue 12: `NASDAQ:AAPL` ({{tickerid}}) matched no AAPL pipeline."""
    from dispatcher.matching import MatchIndex
    from schemas.pipeline import Scanner

    response = client.post("/webhooks/tradingview/tv", json=alert(ticker=ticker))
    assert response.status_code == 200, response.text
    [signal] = received(bus)
    assert signal.tickers == ("AAPL",) and set(signal.bias) == {"AAPL"}
    assert signal.routing_key == "signal.external.AAPL"
    assert signal.metadata["exchange"] == "NASDAQ"
    index = MatchIndex.build([("aapl-watcher", Scanner(tickers=("AAPL",)))])
    assert index.match(signal) == ["aapl-watcher"]


def test_tradingview_prefix_and_plain_symbol_are_one_alert_with_the_same_exchange(
    client: AsgiClient, bus: tuple[Connection, Queue]
) -> None:
    prefixed = client.post("/webhooks/tradingview/tv", json=alert(ticker="NASDAQ:AAPL"))
    plain = client.post("/webhooks/tradingview/tv", json=alert(ticker="AAPL", exchange="NASDAQ"))
    assert prefixed.status_code == plain.status_code == 200
    assert plain.json()["status"] == "duplicate"
    assert plain.json()["signal_id"] == prefixed.json()["signal_id"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"ticker": "NASDAQ:"}, "is not SYMBOL or EXCHANGE:SYMBOL"),
        ({"ticker": "A:B:C"}, "is not SYMBOL or EXCHANGE:SYMBOL"),
        ({"ticker": "NYSE:AAPL", "exchange": "NASDAQ"}, "disagrees with `exchange`"),
    ],
)
def test_a_bad_exchange_prefix_is_422_naming_the_ticker(
    client: AsgiClient, bus: tuple[Connection, Queue], change: dict[str, str], message: str
) -> None:
    response = client.post("/webhooks/tradingview/tv", json=alert(**change))
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "ticker"]
    assert message in response.json()["detail"][0]["msg"]
    assert received(bus) == []
