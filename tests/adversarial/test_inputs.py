"""Hostile input through the real HTTP service (uvicorn, PostgreSQL, Redis as broker and
limit store): each attack is refused with a 4xx naming the field, or is harmless, and the
allowed request right after still works.

- a year-1 / year-9999 time, sent to the ingress or stored by any publisher, never breaks the
  dashboard, /metrics or the signal lists (it was a 500 for everyone until 20,000 newer
  signals existed);
- a lone surrogate, NaN/Infinity, a cursor past bigint, a time outside years 1..9999 in UTC,
  a signed body nested 500 deep: 422 naming the field, never a 500;
- `matched_count` counts only the caller's own pipelines; an admin cannot create a pipeline
  for a user that does not exist.
"""

from __future__ import annotations

import base64
import json
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from schemas.external import WebhooksConfig
from signalgen.bus import KombuPublisher
from signalgen.ingress.webhooks import sign
from signalgen.interfaces.http.app import create_app
from signalgen.interfaces.http.queries import encode_cursor
from signalgen.settings import Settings
from signalgen.storage import Database
from signalgen.storage.models import Bar, Execution, SignalRecord
from tests.integration.test_http_api import add_users, make_signal, store_signals
from tests.support.api_server import running_server

pytestmark = pytest.mark.integration

TV_SECRET = "adv-tradingview-secret-0123456789"
HMAC_SECRET = "adv-partner-secret-0123456789abcdef"
PIPELINE = {"name": "watch", "trigger_mode": "signal", "scanner": {"tickers": ["AAPL"]}}
EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


@dataclass
class Service:
    url: str
    db: Database
    keys: dict[str, str]

    def client(self, user: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[user]}"} if user else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)


def webhooks(**bounds: Any) -> WebhooksConfig:
    return WebhooksConfig.model_validate(
        {
            **bounds,
            "sources": {
                "tv": {"kind": "tradingview", "secret": TV_SECRET},
                "partner": {"kind": "hmac", "secret": HMAC_SECRET},
            },
        }
    )


@pytest.fixture
def serve(pg_db: Database, redis_url: str, redis_client: Any) -> Iterator[Any]:
    """serve(**webhook bounds) -> a running Service with users alice, bob and admin root."""
    keys = add_users(pg_db, "alice", "bob", "root", admin=("root",))
    servers: list[Any] = []

    def start(**bounds: Any) -> Service:
        app = create_app(
            database=pg_db,
            redis_url=redis_url,
            broker_url=redis_url,
            publisher=KombuPublisher(redis_url),
            webhooks_config=webhooks(**bounds),
            api_settings=Settings(API_RATE_LIMIT=1_000_000),
        )
        server = running_server(app)
        servers.append(server)
        url: str = server.__enter__()
        return Service(url, pg_db, keys)

    yield start
    for server in reversed(servers):
        server.__exit__(None, None, None)


@pytest.fixture
def service(serve: Any) -> Service:
    started: Service = serve()
    return started


def loc(response: httpx.Response) -> list[str]:
    """The fields a 422 names (`a.b`), checking the body is JSON a client can read."""
    assert response.status_code == 422, (response.status_code, response.text)
    return [".".join(str(p) for p in item["loc"]) for item in response.json()["detail"]]


def tv_alert(**fields: Any) -> dict[str, Any]:
    return {"secret": TV_SECRET, "ticker": "AAPL", "action": "buy", **fields}


def signed(client: httpx.Client, body: bytes) -> httpx.Response:
    headers = {"X-Signature-256": sign(body, HMAC_SECRET), "Content-Type": "application/json"}
    return client.post("/webhooks/signals/partner", content=body, headers=headers)


def reads_all_answer(service: Service) -> dict[str, Any]:
    """Every aggregate and list a person or a scraper reads; all must be 200. Returns the
    dashboard's data."""
    with service.client("root") as root:
        for path in ("/dashboard", "/metrics", "/readyz"):
            response = root.get(path)
            assert response.status_code == 200, (path, response.text[:500])
        data = root.get("/dashboard/data", params={"days": 36500})
        assert data.status_code == 200, data.text[:500]
        cursor, seen = None, 0
        while True:  # every page of the signal list, oldest times included
            params = {"limit": 2} if cursor is None else {"limit": 2, "cursor": cursor}
            page = root.get("/api/v1/signals", params=params)
            assert page.status_code == 200, page.text[:500]
            seen += len(page.json()["items"])
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert seen >= 1
        return data.json()  # type: ignore[no-any-return]


# -- 1. robust reads --------------------------------------------------------------------------


def test_extreme_times_from_any_publisher_never_break_the_dashboard_or_the_lists(
    service: Service,
) -> None:
    # What another publisher on the bus may record: the schema admits years 1..9999.
    ancient = make_signal("AAPL", EARLIEST, source="other-publisher")
    future = make_signal("MSFT", LATEST, source="other-publisher")
    normal = make_signal("AAPL", datetime(2026, 1, 5, tzinfo=UTC))
    store_signals(service.db, [ancient, future, normal])
    with service.db.session() as session:
        # Bars the hit-rate reads: a year-1 bar, and a close of 0 (a bad import) next to it.
        for offset, close in enumerate([100.0, 0.0, 101.0, 102.0, 103.0, 104.0, 105.0]):
            day = date(1, 1, 1) + timedelta(days=offset)
            session.add(
                Bar(
                    ticker="AAPL", day=day, open=1, high=1, low=1, close=close, volume=1, source="t"
                )
            )
        pipeline_id = uuid.uuid4()
    with service.client("root") as root:
        created = root.post("/api/v1/pipelines", json=PIPELINE)
        assert created.status_code == 201, created.text
        pipeline_id = uuid.UUID(created.json()["id"])
    with service.db.session() as session:
        # A float column admits NaN and infinity; neither may reach the strict JSON page.
        for n, latency in enumerate([float("nan"), float("inf"), 0.25]):
            session.add(
                Execution(
                    pipeline_id=pipeline_id,
                    signal_id=normal.signal_id,
                    idempotency_key=f"k{n}",
                    status="succeeded",
                    latency_seconds=latency,
                )
            )
    data = reads_all_answer(service)
    assert data["latency"]["count"] == 1 and data["latency"]["p50"] == 0.25
    assert {row["generator"] for row in data["hit_rates"]} >= {"other-publisher"}
    with service.client("alice") as alice:
        detail = alice.get(f"/api/v1/signals/{ancient.signal_id}")
        assert detail.status_code == 200, detail.text
        assert detail.json()["event_time"] == "0001-01-01T00:00:00Z"
        latest = alice.get(f"/api/v1/signals/{future.signal_id}").json()
        assert latest["created_at"] == "9999-12-31T23:59:59.999999Z"
        # Filters at the very ends of the range are answered too.
        edge = alice.get(
            "/api/v1/signals",
            params={"since": "0001-01-01T00:00:00Z", "until": "9999-12-31T23:59:59Z"},
        )
        assert edge.status_code == 200 and len(edge.json()["items"]) == 2, edge.text


def test_ingress_refuses_absurd_times_and_reads_survive_when_an_operator_allows_them(
    serve: Any,
) -> None:
    service = serve()
    with service.client() as client:
        for when in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"):
            refused = client.post(
                "/webhooks/tradingview/tv", json=tv_alert(time=when, alert_id=when)
            )
            assert loc(refused) == ["body.time"], refused.text
            body = json.dumps({"tickers": ["AAPL"], "bias": "BULLISH", "event_time": when})
            assert loc(signed(client, body.encode())) == ["body.event_time"]
        # A time outside years 1..9999 once in UTC: a 422, not an OverflowError.
        shifted = client.post(
            "/webhooks/tradingview/tv", json=tv_alert(time="0001-01-01T00:00:00+01:00")
        )
        assert loc(shifted) == ["body.time"], shifted.text
        now = datetime.now(UTC).isoformat()
        accepted = client.post("/webhooks/tradingview/tv", json=tv_alert(time=now, alert_id="ok"))
        assert accepted.status_code == 200, accepted.text

    # An operator who lifts the bounds (null) gets year 1 stored through the ingress: the
    # dashboard, /metrics and lists still answer (reads never trust what was written).
    open_service = serve(max_event_age_days=None, max_event_lead_seconds=None)
    with open_service.client() as client:
        for n, when in enumerate(("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z")):
            stored = client.post(
                "/webhooks/tradingview/tv", json=tv_alert(time=when, alert_id=f"x{n}")
            )
            assert stored.status_code == 200, stored.text
    with open_service.db.session() as session:
        times = sorted(row.event_time for row in session.query(SignalRecord))
    assert times[0] == EARLIEST and times[-1].year == 9999
    assert reads_all_answer(open_service)["hit_rates"]


# -- 2. the four 500s ---------------------------------------------------------------------------


def raw_json(client: httpx.Client, method: str, path: str, text: str) -> httpx.Response:
    """A body as written (Python's JSON reader takes `NaN` and `"\\ud800"`, httpx would not
    write them)."""
    return client.request(
        method, path, content=text.encode(), headers={"Content-Type": "application/json"}
    )


def test_lone_surrogates_anywhere_are_a_422_that_encodes(service: Service) -> None:
    pipelines = "/api/v1/pipelines"
    with service.client("alice") as alice:
        cases = {
            '{"name": "\\ud800", "trigger_mode": "signal", "scanner": {"tickers": ["AAPL"]}}': (
                "body.name"
            ),
            '{"name": "ok\\udfff", "trigger_mode": "periodic", '
            '"schedule": {"crontab": "0 * * * *"}}': "body.name",
            '{"name": "ok", "trigger_mode": "periodic", '
            '"schedule": {"crontab": "0 * * * *\\ud800"}}': "body.schedule",
            '{"name": "ok", "trigger_mode": "signal", "scanner": {"tickers": ["\\udc00"]}}': (
                "body.scanner"
            ),
            '{"name": "ok", "trigger_mode": "signal", "scanner": {"tickers": ["AAPL"]}, '
            '"executor": {"kind": "webhook", "url": "http://127.0.0.1:9/h", '
            '"secret": "\\ud800\\ud800\\ud800\\ud800\\ud800\\ud800"}}': "body.executor",
            '{"name": "ok", "trigger_mode": "signal", "\\ud800": 1}': "body",
        }
        for text, field in cases.items():
            response = raw_json(alice, "POST", pipelines, text)
            assert response.status_code == 422, (text, response.status_code, response.text)
            assert field in loc(response), (text, response.text)
        replay = raw_json(alice, "POST", "/api/v1/replays", '{"tickers": ["\\ud800"]}')
        assert "body.tickers" in loc(replay)
        # The allowed case: a real (paired) surrogate pair is an emoji, and is fine.
        created = raw_json(
            alice,
            "POST",
            pipelines,
            '{"name": "rocket \\ud83d\\ude80", "trigger_mode": "signal", '
            '"scanner": {"tickers": ["AAPL"]}}',
        )
        assert created.status_code == 201, created.text
        assert created.json()["name"] == "rocket \U0001f680"
        patched = raw_json(
            alice, "PATCH", f"{pipelines}/{created.json()['id']}", '{"name": "\\udbff"}'
        )
        assert loc(patched) == ["body.name"]
        # A query string cannot carry a surrogate: its invalid UTF-8 is read as U+FFFD.
        odd = alice.get(f"{pipelines}?name=%ED%A0%80")
        assert odd.status_code == 200 and odd.json()["items"] == [], odd.text


def test_nan_and_infinity_are_a_422_naming_the_field(service: Service) -> None:
    with service.client("alice") as alice:
        for number in ("NaN", "Infinity", "-Infinity", "1e999"):
            text = (
                '{"name": "n", "trigger_mode": "signal", '
                f'"scanner": {{"tickers": ["AAPL"], "min_confidence": {number}}}}}'
            )
            response = raw_json(alice, "POST", "/api/v1/pipelines", text)
            assert "body.scanner.min_confidence" in loc(response), (number, response.text)
        # In a query string too (the list's `limit` is the numeric one): 422, never a 500.
        for number in ("NaN", "inf", "1e999", str(2**70)):
            listed = alice.get("/api/v1/pipelines", params={"limit": number})
            assert loc(listed) == ["query.limit"], listed.text
        ok = alice.post(
            "/api/v1/pipelines",
            json={**PIPELINE, "scanner": {"tickers": ["AAPL"], "min_confidence": 0.5}},
        )
        assert ok.status_code == 201, ok.text


def b64(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_malformed_cursors_are_a_422_naming_the_cursor(service: Service) -> None:
    with service.client("alice") as alice:
        created = [alice.post("/api/v1/pipelines", json=PIPELINE).json() for _ in range(3)]
        pipeline_id = created[0]["id"]
        executions = f"/api/v1/pipelines/{pipeline_id}/executions"
        bad_ids = [
            encode_cursor(2**63),
            encode_cursor(-(2**63) - 1),
            encode_cursor("9" * 30),
            b64([1]),
            b64(["1", "2"]),
            "%%%",
            "",
        ]
        for cursor in bad_ids:
            response = alice.get(executions, params={"cursor": cursor})
            assert loc(response) == ["query.cursor"], (cursor, response.text)
        moment = "0001-01-01T00:00:00+01:00"  # before year 1 once in UTC
        bad_times = [
            encode_cursor(moment, uuid.uuid4()),
            b64(["9999-12-31T23:59:59-01:00", str(uuid.uuid4())]),
            b64(["2026-01-01T00:00:00", str(uuid.uuid4())]),  # naive
            b64([[[[[[]]]]]]),
        ]
        for cursor in bad_times:
            for path in ("/api/v1/pipelines", "/api/v1/signals"):
                response = alice.get(path, params={"cursor": cursor})
                assert loc(response) == ["query.cursor"], (path, cursor, response.text)
        # The allowed case: the biggest id there can be, and real paging.
        assert alice.get(executions, params={"cursor": encode_cursor(2**63 - 1)}).status_code == 200
        first = alice.get("/api/v1/pipelines", params={"limit": 2}).json()
        rest = alice.get("/api/v1/pipelines", params={"limit": 2, "cursor": first["next_cursor"]})
        assert rest.status_code == 200
        seen = [p["id"] for p in first["items"] + rest.json()["items"]]
        assert sorted(seen) == sorted(p["id"] for p in created)


def test_nesting_past_the_limit_is_a_422_before_any_parser_recurses(service: Service) -> None:
    with service.client() as client:
        for depth in (500, 5000, 33):
            metadata = "[" * depth + "]" * depth
            body = f'{{"tickers": ["AAPL"], "bias": "BULLISH", "metadata": {{"a": {metadata}}}}}'
            started = time.perf_counter()
            response = signed(client, body.encode())
            assert response.status_code == 422, (depth, response.text[:300])
            assert response.json()["field"] == "body", response.text
            assert time.perf_counter() - started < 2
        # TradingView's route checks the depth on the raw bytes as well.
        deep_alert = '{"secret": "x", "n": ' + "[" * 500 + "]" * 500 + "}"
        refused = client.post(
            "/webhooks/tradingview/tv",
            content=deep_alert.encode(),
            headers={"Content-Type": "application/json"},
        )
        assert refused.status_code == 422 and refused.json()["field"] == "body"
        # The allowed case: nesting well inside the limit, and brackets inside strings.
        fine = json.dumps(
            {
                "tickers": ["AAPL"],
                "bias": "BULLISH",
                "event_id": "nest-ok",
                "metadata": {"a": [[[[{"b": "[" * 40}]]]]},
            }
        )
        accepted = signed(client, fine.encode())
        assert accepted.status_code == 200, accepted.text
        assert client.get("/healthz").status_code == 200


# -- 5. counts from other users, 6. unknown owners ---------------------------------------------


def test_matched_count_counts_only_the_callers_own_pipelines(service: Service) -> None:
    signal = make_signal("AAPL", datetime(2026, 3, 2, 15, tzinfo=UTC))
    store_signals(service.db, [signal])
    owned: dict[str, list[uuid.UUID]] = {}
    for user, count in (("alice", 1), ("bob", 2)):
        with service.client(user) as client:
            owned[user] = [
                uuid.UUID(client.post("/api/v1/pipelines", json=PIPELINE).json()["id"])
                for _ in range(count)
            ]
    with service.db.session() as session:
        record = session.get(SignalRecord, signal.signal_id)
        assert record is not None
        record.dispatch_status, record.matched_count = "dispatched", 3
        for n, pipeline_id in enumerate([*owned["alice"], *owned["bob"]]):
            # bob's first pipeline ran twice (a forced replay: generation 1): still one match
            for generation in (0, 1) if pipeline_id == owned["bob"][0] else (0,):
                session.add(
                    Execution(
                        pipeline_id=pipeline_id,
                        signal_id=signal.signal_id,
                        idempotency_key=f"{n}:{generation}",
                        generation=generation,
                        status="succeeded",
                    )
                )
    expected = {"alice": 1, "bob": 2, "root": 3}
    for user, count in expected.items():
        with service.client(user) as client:
            detail = client.get(f"/api/v1/signals/{signal.signal_id}").json()
            assert detail["matched_count"] == count, (user, detail)
            assert {e["pipeline_id"] for e in detail["executions"]} == (
                {str(p) for ps in owned.values() for p in ps}
                if user == "root"
                else {str(p) for p in owned[user]}
            )
            for params in ({}, {"ticker": "AAPL"}):
                [item] = client.get("/api/v1/signals", params=params).json()["items"]
                assert item["matched_count"] == count, (user, params, item)
    # A user with no pipelines sees 0; a signal not dispatched yet is null for everyone.
    keys = add_users(service.db, "carol")
    pending = make_signal("MSFT", datetime(2026, 3, 2, 16, tzinfo=UTC))
    store_signals(service.db, [pending])
    with httpx.Client(
        base_url=service.url, headers={"Authorization": f"Bearer {keys['carol']}"}
    ) as carol:
        items = {i["signal_id"]: i for i in carol.get("/api/v1/signals").json()["items"]}
        assert items[str(signal.signal_id)]["matched_count"] == 0
        assert items[str(pending.signal_id)]["matched_count"] is None


def test_admin_cannot_create_a_pipeline_for_a_user_that_does_not_exist(service: Service) -> None:
    with service.client("root") as root:
        refused = root.post("/api/v1/pipelines", json={**PIPELINE, "owner": "ghost"})
        assert loc(refused) == ["body.owner"]
        assert "ghost" in refused.json()["detail"][0]["msg"]
        allowed = root.post("/api/v1/pipelines", json={**PIPELINE, "owner": "alice"})
        assert allowed.status_code == 201 and allowed.json()["owner"] == "alice"
        listed = root.get("/api/v1/pipelines", params={"owner": "ghost"}).json()
        assert listed["items"] == []
    with service.client("alice") as alice:
        # Not an admin: naming another owner stays a 403, whether or not that user exists.
        assert alice.post("/api/v1/pipelines", json={**PIPELINE, "owner": "bob"}).status_code == 403
        assert (
            alice.post("/api/v1/pipelines", json={**PIPELINE, "owner": "ghost"}).status_code == 403
        )


def test_error_bodies_are_strict_json(service: Service) -> None:
    """Every 422 above is read with a strict parser: no NaN, valid UTF-8."""
    with service.client("alice") as alice:
        text = '{"name": "\\ud800", "trigger_mode": "signal", "scanner": {"min_confidence": NaN}}'
        response = raw_json(alice, "POST", "/api/v1/pipelines", text)
        assert response.status_code == 422

        def refuse(constant: str) -> float:
            raise AssertionError(f"{constant} in an error body")

        detail = json.loads(response.content.decode("utf-8"), parse_constant=refuse)["detail"]
        inputs = json.dumps(detail)
        assert "\\\\ud800" in inputs and not any(
            isinstance(i.get("input"), float) and not math.isfinite(i["input"]) for i in detail
        )
