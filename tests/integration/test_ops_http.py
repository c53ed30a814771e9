"""The operations pages of the HTTP service on real services: `/metrics` scraped while the bus
works (worker, Redis, PostgreSQL, a local Finnhub), and `/dashboard` rendered by a real headless
Chromium over signals computed by the real generators from the bundled bars."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text, update

from bench.fakes.fake_finnhub import FakeFinnhub
from dispatcher import claims
from generators.backtest import walk_forward
from generators.death_cross import DeathCrossConfig, DeathCrossSignalGenerator
from generators.golden_cross import GoldenCrossConfig, GoldenCrossSignalGenerator
from signalgen.bus import record_signals
from signalgen.config.operations import Budget, Budgets, OperationsConfig
from signalgen.interfaces.http.app import create_app
from signalgen.marketdata.costs import BudgetExhausted, BudgetGuard
from signalgen.marketdata.csv_import import load_sample_bars
from signalgen.marketdata.errors import MarketDataError
from signalgen.marketdata.finnhub import FinnhubSource
from signalgen.marketdata.limiter import Limit, RedisRateLimiter
from signalgen.marketdata.store import BarStore
from signalgen.marketdata.usage import DatabaseUsage, record_call
from signalgen.ops.dlq import add_dead_letter
from signalgen.ops.health import record_run
from signalgen.storage import Database
from signalgen.storage.models import DeadLetter, Pipeline, SignalRecord
from tests.integration.ops_support import (
    add_pipelines,
    ops_env,
    publish,
    publish_raw,
    signal_json,
    statuses,
)
from tests.support.api_server import running_server
from tests.support.ops import make_signal
from tests.support.processes import start_worker
from tests.support.wait import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings("ignore::celery.exceptions.CPendingDeprecationWarning"),
]


def scrape(base: str) -> dict[str, float]:
    response = httpx.get(f"{base}/metrics", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}"] = sample.value
    return out


def total(samples: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(prefix))


def test_metrics_endpoint_exports_every_metric_and_they_move(
    tmp_path: Path, pg_db: Database, redis_url: str, redis_client: object
) -> None:
    import redis

    env = ops_env(tmp_path, pg_db, redis_url)
    config = OperationsConfig(
        cost_per_call={"finnhub": 0.002},
        budgets=Budgets(generators={"gc_gen": Budget(calls_per_hour=3)}),
    )
    app = create_app(
        database=pg_db, redis_url=redis_url, broker_url=redis_url, operations_config=config
    )
    add_pipelines(pg_db, redis_url, {"owner": "alice", "scanner": {"tickers": ["AAPL"]}})
    client = redis.Redis.from_url(redis_url)
    with running_server(app) as base:
        before = scrape(base)
        assert before["signalgen_outbox_backlog{}"] == 0
        assert total(before, "signalgen_collector_up") == 8

        # Work waiting for a worker: queue depth and outbox backlog rise.
        publish(redis_url, [signal_json("AAPL", i) for i in range(12)])
        publish_raw(redis_url, [(b"not json", "application/json", "signal.x")] * 3)
        with pg_db.session() as session:
            record_signals(session, [make_signal("NVDA", i, source="outbox_gen") for i in range(4)])
        waiting = scrape(base)
        assert waiting["signalgen_queue_depth{queue=signals.dispatch}"] == 15
        assert waiting["signalgen_outbox_backlog{}"] == 4

        # Finnhub calls through the real source: quotes succeed, candles 403, budget of 3/hour.
        with FakeFinnhub(token="k" * 20) as finnhub:
            finnhub.quotes["AAPL"] = {
                "c": 10.0,
                "h": 11.0,
                "l": 9.0,
                "o": 9.5,
                "pc": 9.0,
                "t": int(time.time()),
            }
            finnhub.set_mode("/stock/candle", "403")
            source = FinnhubSource(
                "k" * 20,
                base_url=finnhub.base_url,
                usage=DatabaseUsage(pg_db),
                limiter=RedisRateLimiter(client, [Limit(30, 1.0)], key="t:finnhub"),
                budget=BudgetGuard(client, config, database=pg_db),
            )
            source.quote("AAPL", generator="gc_gen")
            source.quote("AAPL", generator="gc_gen")
            with pytest.raises(MarketDataError):
                source.candles(
                    "AAPL",
                    datetime(2024, 1, 1).date(),
                    datetime(2024, 2, 1).date(),
                    generator="gc_gen",
                )
            with pytest.raises(BudgetExhausted):
                source.quote("AAPL", generator="gc_gen")  # 4th call this hour: paused
            assert len(finnhub.requests) == 3
            source.close()

        worker = start_worker(env, tmp_path / "w.log", name="w1", concurrency=2)
        try:
            wait_until(
                lambda: statuses(pg_db).get(("succeeded", 0)) == 12,
                timeout=60,
                message="executions",
                detail=lambda: statuses(pg_db),
            )
            time.sleep(1)
            after = scrape(base)
        finally:
            worker.stop()
    client.close()

    assert (
        after["signalgen_signals_emitted_total{generator=ops-test,signal_type=golden_cross}"] == 12
    )
    assert (
        after["signalgen_signals_emitted_total{generator=outbox_gen,signal_type=golden_cross}"] == 4
    )
    assert after["signalgen_signals_dispatch_total{outcome=dispatched}"] == 12
    assert after["signalgen_executions{status=succeeded}"] == 12
    assert after["signalgen_publish_to_execution_seconds_count{}"] == 12
    assert after["signalgen_publish_to_execution_seconds_sum{}"] > 0
    assert after["signalgen_queue_depth{queue=signals.dispatch}"] == 0
    assert after["signalgen_outbox_backlog{}"] == 4
    assert after["signalgen_dead_letters{reason=invalid signal,stage=dispatch,status=dead}"] == 3
    calls = "signalgen_provider_calls_total{endpoint=%s,generator=gc_gen,provider=finnhub}"
    errors = "signalgen_provider_errors_total{endpoint=%s,generator=gc_gen,provider=finnhub}"
    assert after[calls % "quote"] == 2 and after[calls % "stock/candle"] == 1
    assert after[errors % "stock/candle"] == 1 and after[errors % "quote"] == 0
    assert after[
        "signalgen_provider_cost_total{generator=gc_gen,provider=finnhub}"
    ] == pytest.approx(0.006)
    for name in (
        "signalgen_signals_emitted_total",
        "signalgen_executions{",
        "signalgen_publish_to_execution_seconds_count",
        "signalgen_dead_letters",
        "signalgen_provider_calls_total",
        "signalgen_provider_errors_total",
    ):
        assert total(after, name) > total(before, name), name
    assert total(after, "signalgen_collector_up") == 8


# -- dashboard in a real browser ---------------------------------------------------------------


def chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("CI"):
        pytest.fail("chromium is not installed (CI is set: .ci/run must install it)", pytrace=False)
    if found is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return found


def browser(binary: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    profile = tmp_path / f"profile-{uuid.uuid4().hex[:6]}"
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )


def seed_dashboard(db: Database) -> tuple[int, dict[str, int]]:
    """Real signals: the golden/death-cross generators walked forward over the bundled bars;
    executions through the dispatcher's claims; dead letters through its dead-letter path."""
    store = BarStore(db)
    load_sample_bars(store)
    tickers = ("AAPL", "INTC", "NVDA", "ORCL", "SPY")
    bars = store.load_bars(tickers, 500)
    signals = []
    for cls, config, name in (
        (
            GoldenCrossSignalGenerator,
            GoldenCrossConfig(sma_short=20, sma_long=50),
            "golden_cross_generator",
        ),
        (
            DeathCrossSignalGenerator,
            DeathCrossConfig(sma_short=20, sma_long=50),
            "death_cross_generator",
        ),
    ):
        signals += walk_forward(cls(config, source=name, tickers=tickers), bars)
    with db.session() as session:
        record_signals(session, signals)
    pipeline = uuid.uuid4()
    with db.session() as session:
        session.add(
            Pipeline(
                id=pipeline,
                owner="alice",
                name="all",
                trigger_mode="signal",
                scanner={"tickers": list(tickers)},
                executor="record",
            )
        )
    now = datetime.now(UTC)
    outcomes = {"succeeded": 0, "failed": 0}
    for number, signal in enumerate(signals):
        status = "failed" if number % 10 == 0 else "succeeded"
        outcomes[status] += 1
        published_at = now - timedelta(milliseconds=20 + number * 7)
        executed(db, signal.signal_id, pipeline, now, published_at, status)
    for _ in range(3):
        with db.session() as session:
            add_dead_letter(
                session, stage="dispatch", reason="body is not UTF-8 text", body=b"\xff"
            )
    record_call(
        db,
        provider="finnhub",
        generator="golden_cross_generator",
        endpoint="quote",
        calls=120,
        at=now,
    )
    return len(signals), outcomes


#: Screenshots are kept as test artefacts here (ignored by git; CI may upload the folder).
ARTIFACTS = Path(
    os.environ.get("SIGNALGEN_ARTIFACTS_DIR", Path(__file__).resolve().parents[2] / "artifacts")
)


class Cells(HTMLParser):
    """Rows of the dumped DOM by a data attribute (`data-generator`, ...): their cell texts;
    and the overview's numbers by KPI id."""

    def __init__(self, attribute: str) -> None:
        super().__init__()
        self.attribute = attribute
        self.rows: dict[str, list[str]] = {}
        self.kpis: dict[str, str] = {}
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._kpi: str | None = None
        self._in_b = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr" and found.get(self.attribute) is not None:
            self._row = self.rows.setdefault(str(found[self.attribute]), [])
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "div" and (found.get("id") or "").startswith("kpi-"):
            self._kpi = str(found["id"])[4:]
        elif tag == "b" and self._kpi is not None:
            self._in_b = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "b":
            self._in_b = False
            self._kpi = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_b and self._kpi is not None:
            self.kpis[self._kpi] = self.kpis.get(self._kpi, "") + data


def parse(html: str, attribute: str) -> Cells:
    cells = Cells(attribute)
    cells.feed(html)
    return cells


def executed(
    db: Database,
    signal_id: uuid.UUID,
    pipeline_id: uuid.UUID,
    now: datetime,
    published_at: datetime,
    status: str,
    error: str | None = None,
) -> None:
    """One execution of the signal for the pipeline: claimed, started, finished as `status`."""
    with db.session() as session:
        (claim,) = claims.claim_signal(
            session, signal_id=signal_id, generation=0, pipeline_ids=[pipeline_id], now=now
        )
        started = claims.start(
            session,
            claim.execution_id,
            now=now,
            lease=timedelta(minutes=5),
            published_at=published_at,
        )
        assert started is not None
        claims.finish(session, started, status=status, now=now, error=error)


def rendered(
    app: Any, binary: str | None, tmp_path: Path, query: str, size: tuple[int, int], name: str
) -> tuple[dict[str, Any], str, Path]:
    """The dashboard of `app` with `query` (`days=...&horizon=...`, or ""): its JSON data, the
    DOM headless chromium made of the page, and a screenshot of `size` (kept as `name`)."""
    assert binary is not None  # `chromium()` skipped the test otherwise
    with running_server(app) as base:
        data = httpx.get(f"{base}/dashboard/data{'?' if query else ''}{query}", timeout=30).json()
        url = f"{base}/dashboard?{query}{'&' if query else ''}refresh=0"
        dom = browser(binary, tmp_path, "--dump-dom", url)
        shot = tmp_path / name
        picture = browser(
            binary,
            tmp_path,
            f"--screenshot={shot}",
            f"--window-size={size[0]},{size[1]}",
            "--hide-scrollbars",
            url,
        )
    assert dom.returncode == 0, dom.stderr.decode()[-2000:]
    assert picture.returncode == 0 and shot.exists(), picture.stderr.decode()[-2000:]
    keep(shot, name)
    return data, dom.stdout.decode(), shot


def keep(shot: Path, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, ARTIFACTS / name)


def assert_real_picture(shot: Path, size: tuple[int, int]) -> None:
    """A real screenshot with content: many distinct colours, not a blank page."""
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == size
    colours = image.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50
    dominant = max(colours)[0] / (image.size[0] * image.size[1])
    assert dominant < 0.9, f"one colour covers {dominant:.0%} of the screenshot"


def seed_live(db: Database, redis_url: str, now: datetime) -> dict[str, object]:
    """The last 7 days as an operator sees them: signals from two generators in several hours,
    executions (some failed, one pipeline failing more), signals the broker never took, dead
    letters (one requeued), provider calls, messages waiting in a queue, health records."""
    from kombu import Connection

    live = [
        make_signal(t, i, source=g, at=now - timedelta(hours=h))
        for g, hours in (("gc_live", (1, 2, 30)), ("news_live", (3, 50)))
        for h in hours
        for i, t in enumerate(("AAPL", "NVDA"))
    ]
    old = [make_signal("AAPL", 0, source="gc_live", at=now - timedelta(days=9))]
    with db.session() as session:
        record_signals(session, live + old)
    with db.session() as session:  # published, except 3 (the outbox backlog)
        session.execute(update(SignalRecord).values(published_at=now))
        session.execute(
            update(SignalRecord)
            .where(SignalRecord.signal_id.in_([s.signal_id for s in live[:3]]))
            .values(published_at=None)
        )
    pipelines = {name: uuid.uuid4() for name in ("steady", "flaky")}
    with db.session() as session:
        for name, pid in pipelines.items():
            session.add(
                Pipeline(
                    id=pid,
                    owner="bob",
                    name=name,
                    trigger_mode="signal",
                    scanner={"tickers": ["AAPL"]},
                    executor="record",
                )
            )
    for number, signal in enumerate(live):
        for name, pid in pipelines.items():
            failed = name == "flaky" and number % 3 == 0
            published_at = now - timedelta(milliseconds=30 + 11 * number)
            status = "failed" if failed else "succeeded"
            error = "HTTP 502 from the backend" if failed else None
            executed(db, signal.signal_id, pid, now, published_at, status, error)
    for _ in range(3):
        with db.session() as session:
            add_dead_letter(
                session, stage="dispatch", reason="body is not UTF-8 text", body=b"\xff"
            )
    with db.session() as session:
        add_dead_letter(
            session, stage="dispatch", reason="invalid signal: tickers.0: bad", body=b"{}"
        )
    with db.session() as session:
        newest = session.execute(select(func.max(DeadLetter.id))).scalar_one()
        session.execute(update(DeadLetter).where(DeadLetter.id == newest).values(status="requeued"))
    record_call(
        db,
        provider="finnhub",
        generator="gc_live",
        endpoint="quote",
        calls=40,
        at=now - timedelta(hours=2),
    )
    record_call(
        db,
        provider="finnhub",
        generator="gc_live",
        endpoint="quote",
        calls=20,
        at=now - timedelta(days=2),
    )
    with Connection(redis_url) as connection:
        queue = connection.SimpleQueue("pipelines")
        for n in range(5):
            queue.put({"n": n})
        queue.close()
    record_run(
        redis_url,
        {"generator": "gc_live", "new": 2, "bars": 300, "needed": 205},
        now - timedelta(seconds=20),
    )
    record_run(
        redis_url,
        {"generator": "news_live", "new": 0, "bars": 40, "needed": 205},
        now - timedelta(seconds=20),
    )
    return {"pipelines": pipelines}


def truth(db: Database, since: datetime) -> dict[str, object]:
    """What the database says, asked directly (not through the dashboard's code)."""
    with db.engine.connect() as connection:

        def one(sql: str, **params: object) -> int:
            return int(connection.execute(text(sql), params).scalar_one())

        return {
            "signals": one("SELECT count(*) FROM signals WHERE created_at >= :s", s=since),
            "executions": one("SELECT count(*) FROM executions WHERE claimed_at >= :s", s=since),
            "failed": one(
                "SELECT count(*) FROM executions WHERE claimed_at >= :s AND status = 'failed'",
                s=since,
            ),
            "outbox": one("SELECT count(*) FROM signals WHERE published_at IS NULL"),
            "dead": one("SELECT count(*) FROM dead_letters WHERE status = 'dead'"),
            "per_generator": dict(
                connection.execute(
                    text(
                        "SELECT source, count(*) FROM signals WHERE created_at >= :s "
                        "GROUP BY source"
                    ),
                    {"s": since},
                ).all()
            ),
            "failed_per_pipeline": dict(
                connection.execute(
                    text(
                        "SELECT CAST(pipeline_id AS TEXT), count(*) FROM executions "
                        "WHERE claimed_at >= :s AND status = 'failed' GROUP BY pipeline_id"
                    ),
                    {"s": since},
                ).all()
            ),
        }


def test_dashboard_in_headless_chromium_shows_what_the_database_holds(
    tmp_path: Path, pg_db: Database, redis_url: str, redis_client: object
) -> None:
    """The default page (last 7 days, hour buckets): overview, generator health, queues and
    outbox, failures per pipeline, every number equal to the database's; screenshots kept."""
    import redis

    from generators.golden_cross import GoldenCrossConfig, GoldenCrossSignalGenerator
    from schemas.config import GeneratorEntry
    from signalgen.config import GeneratorSpec

    binary = chromium()
    now = datetime.now(UTC)
    seeded = seed_live(pg_db, redis_url, now)
    specs = {
        name: GeneratorSpec(
            name=name,
            entry=GeneratorEntry(type="golden_cross", interval_seconds=60),
            generator=GoldenCrossSignalGenerator(
                GoldenCrossConfig(), source=name, tickers=("AAPL",)
            ),
        )
        for name in ("gc_live", "news_live", "idle_live")
    }
    app = create_app(
        database=pg_db,
        redis_url=redis_url,
        broker_url=redis_url,
        generator_specs=specs,
        operations_config=OperationsConfig(cost_per_call={"finnhub": 0.01}),
    )
    data, html, shot = rendered(app, binary, tmp_path, "", (1400, 2200), "dashboard-live.png")
    assert 'data-rendered="true"' in html

    expected = truth(pg_db, datetime.fromisoformat(data["window"]["since"]))
    kpis = parse(html, "data-generator").kpis
    assert kpis["signals"] == str(expected["signals"]) == "10"
    assert kpis["executions"] == str(expected["executions"]) == "20"
    assert kpis["failed-executions"] == str(expected["failed"]) == "4"
    assert kpis["outbox-backlog"] == str(expected["outbox"]) == "3"
    assert kpis["dead-letters"] == str(expected["dead"]) == "3"
    assert kpis["est-cost"] == "0.6000 USD"  # 60 calls in the window x 0.01

    # One row per generator, each saying why it is (not) producing.
    health = parse(html, "data-generator").rows
    assert set(health) == {"gc_live", "news_live", "idle_live"}
    per_generator = expected["per_generator"]
    assert isinstance(per_generator, dict)
    for name in ("gc_live", "news_live"):
        assert health[name][1] == "every 60 s" and re.fullmatch(r"\d+ s ago", health[name][2])
        row = next(r for r in data["health"]["rows"] if r["generator"] == name)
        assert row["last_run"] == (now - timedelta(seconds=20)).isoformat()
        assert health[name][4] == str(per_generator[name])
    assert health["gc_live"][5] == "ok" and health["gc_live"][3] == "59 min ago"
    assert health["news_live"][5] == "insufficient data: have 40, need 205 bars"
    assert health["idle_live"][2:] == ["\u2013", "\u2013", "0", "never ran"]
    assert 'data-generator="news_live" data-state="insufficient_data"' in html

    # Queues: the broker's own count, and the outbox.
    queues = parse(html, "data-queue").rows
    assert queues["pipelines"] == [
        "pipelines",
        str(redis.Redis.from_url(redis_url).llen("pipelines")),
    ]
    assert queues["pipelines"][1] == "5" and queues["signals.dispatch"][1] == "0"
    assert queues["outbox"] == ["outbox (not yet published)", "3"]

    # Failures per pipeline: the flaky one only, with its count and error.
    failures = parse(html, "data-pipeline").rows
    flaky = str(seeded["pipelines"]["flaky"])  # type: ignore[index]
    assert set(failures) == {flaky} == set(expected["failed_per_pipeline"])  # type: ignore[arg-type]
    assert failures[flaky] == ["flaky", "bob", "4", "10", "HTTP 502 from the backend"]

    # The dead-letter panel counts what the overview counts; the requeued one apart.
    assert ">3 dead</p>" in html and "1 requeued or resolved (not counted above)" in html
    assert (
        "body is not UTF-8 text" in html
        and "invalid signal" not in html.split("dead-letters")[-1].split("</section>")[0]
    )

    # Hour buckets of the last 7 days; signals drawn where they happened.
    assert len(data["signals"]["days"]) == 168
    drawn = sum(sum(v) for v in data["signals"]["by_type"].values())
    assert drawn == expected["signals"]
    assert "golden_cross (10)" in html  # the legend's total equals the database's
    assert html.count("<circle") >= 3  # latency percentiles over time
    # Exactly one empty state per empty section, never above a table.
    assert "nothing recorded yet" not in html
    assert_real_picture(shot, (1400, 2200))


def test_dashboard_renders_populated_charts_in_headless_chromium(
    tmp_path: Path, pg_db: Database
) -> None:
    binary = chromium()
    count, outcomes = seed_dashboard(pg_db)
    assert count >= 10, "the bundled bars should hold several crosses"
    app = create_app(
        database=pg_db,
        redis_url="redis://127.0.0.1:1/0",
        broker_url="redis://127.0.0.1:1/0",
        generator_specs={},
        operations_config=OperationsConfig(cost_per_call={"finnhub": 0.0005}),
    )
    query = "days=20000&horizon=5"
    data, html, shot = rendered(app, binary, tmp_path, query, (1280, 1600), "dashboard-history.png")

    # The inline script ran and drew every chart from the embedded numbers.
    assert 'data-rendered="true"' in html
    assert data["signals"]["total"] == count
    assert f"<b>{count}</b>" in html  # the signals KPI
    assert f"<b>{sum(outcomes.values())}</b>" in html  # executions KPI
    for kind, series in data["signals"]["by_type"].items():
        assert f"{kind} ({sum(series)})" in html  # legend with the drawn totals
    scored = [h for h in data["hit_rates"] if h["scored"]]
    assert scored, data["hit_rates"]
    for item in scored:
        assert f"{item['hit_rate'] * 100:.1f}% of {item['scored']}" in html
    assert f">{outcomes['failed']}</text>" in html and f">{outcomes['succeeded']}</text>" in html
    assert f"{data['latency']['p50']:.3f} s" in html
    assert "body is not UTF-8 text" in html
    assert (
        '<td class="text">golden_cross_generator</td><td>120</td><td>0</td><td>0.0600</td>' in html
    )
    assert html.count("<rect") >= 10
    # A broker that is away is said so; the rest of the page is drawn all the same.
    assert "queue depths unavailable: OperationalError" in html
    assert_real_picture(shot, (1280, 1600))
