"""Security properties of the bus, each checked against running code or the source itself.

1. Pickle, and every non-JSON content type, is refused on the intake and on the Celery task
   queues: recorded as a dead letter, never unpickled (a marker file it would create stays
   absent).
2. Secrets (Finnhub key, webhook secret and URL token, database and Redis passwords) never appear
   in logs, errors stored in the database, task arguments as Flower sees them (task events), or
   the API's /metrics and /readyz, in a run built to exercise the paths that could leak them.
3. Secret comparisons are constant-time (`hmac.compare_digest`), by inspection of the code.
4. SQL text is never built by string formatting (bound parameters only), by inspection.
"""

from __future__ import annotations

import ast
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bench.fakes.fake_finnhub import FakeFinnhub
from dispatcher.store import import_specs
from schemas.pipeline import PipelineSpec
from signalgen.bus import KombuPublisher
from signalgen.storage import Database
from signalgen.storage.models import DeadLetter, Execution, SignalRecord
from tests.conftest import create_schema
from tests.faults import harness
from tests.support.processes import CeleryProcess, start_beat
from tests.support.services import postgres_database
from tests.support.wait import wait_until

PROJECT = Path(__file__).resolve().parents[2]
PACKAGES = ["dispatcher", "generators", "schemas", "signalgen", "tasks", "celeryconfig.py"]

pytestmark = pytest.mark.filterwarnings("ignore::celery.exceptions.CPendingDeprecationWarning")


def source_files() -> list[Path]:
    files: list[Path] = []
    for name in PACKAGES:
        path = PROJECT / name
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return [f for f in files if "migrations/versions" not in str(f)]


# -- 1. pickle refused everywhere ----------------------------------------------------------------


@pytest.mark.integration
def test_pickle_on_intake_and_task_queues_is_refused_and_dead_lettered(
    tmp_path: Path, pg_db: Database, redis_url: str, redis_client: object
) -> None:
    stack = harness.Stack(tmp_path / "stack", pg_db, redis_url, redis_url)
    marker = tmp_path / f"pwned-{uuid.uuid4().hex}"
    try:
        stack.start_workers(1)
        sent = harness.inject_hostile(redis_url, marker)
        letters = harness.wait_dead_letters(pg_db, len(sent))
        alive = stack.workers["w0"].proc.poll() is None
    finally:
        stack.close()
    evil = harness.pickle_marker_payload(marker)
    pickles = [x for x in letters if x.body == evil]
    assert len(letters) == len(sent), [x.reason for x in letters]
    # on the intake (exchange), on `dispatch` and `pipelines` with a task header, headerless
    assert len(pickles) == 4, [(x.stage, x.reason) for x in letters]
    assert {x.stage for x in pickles} == {"dispatch", "refused"}
    assert all(
        "python-serialize" in x.reason
        or "ContentDisallowed" in x.reason
        or "undecodable" in x.reason
        for x in pickles
    ), [x.reason for x in pickles]
    assert not marker.exists(), "a pickle was unpickled"
    assert alive


# -- 2. secrets never leak ------------------------------------------------------------------------

FINNHUB_KEY = "fhk-SECRETa1b2c3d4"
WEBHOOK_SECRET = "whsec-SECRETe5f6g7"
WEBHOOK_TOKEN = "whtok-SECRETh8i9j0"
PG_PASSWORD = "pgpw-SECRETk1l2m3"
REDIS_PASSWORD = "rdpw-SECRETn4o5p6"
SECRETS = [FINNHUB_KEY, WEBHOOK_SECRET, WEBHOOK_TOKEN, PG_PASSWORD, REDIS_PASSWORD]


@pytest.fixture
def secret_redis(tmp_path: Path) -> Iterator[str]:
    own = harness.OwnRedis(tmp_path, appendonly=False, password=REDIS_PASSWORD)
    own.start()
    try:
        yield f"redis://:{REDIS_PASSWORD}@127.0.0.1:{own.port}/0"
    finally:
        own.stop()


def _free_port() -> int:
    return harness.free_port()


@pytest.mark.integration
@pytest.mark.slow
def test_secrets_never_appear_in_logs_errors_events_or_metrics(
    tmp_path: Path, secret_redis: str
) -> None:
    captured: dict[str, str] = {}
    with postgres_database() as plain_url, FakeFinnhub(token=FINNHUB_KEY) as finnhub:
        finnhub.set_mode("/stock/candle", "403")
        finnhub.set_mode("/quote", "malformed")
        db_url = plain_url.replace("postgres@", f"postgres:{PG_PASSWORD}@", 1)
        assert PG_PASSWORD in db_url
        db = Database(db_url)
        create_schema(db)
        closed_port = _free_port()  # nothing listens: connection refused, with the URL
        specs = [
            {
                "owner": "sec",
                "name": f"hook-{n}",
                "trigger_mode": "signal",
                "scanner": {"tickers": [harness.TICKERS[n]], "include_mock": True},
                "executor": {
                    "kind": "webhook",
                    "secret": WEBHOOK_SECRET,
                    "max_attempts": 2,
                    "backoff_seconds": 0.05,
                    "timeout_seconds": 2,
                    "url": f"http://127.0.0.1:{closed_port}/hook?token={WEBHOOK_TOKEN}",
                },
            }
            for n in range(3)
        ]
        import_specs(db, [PipelineSpec.model_validate(s) for s in specs], redis_url=secret_redis)
        stack = harness.Stack(
            tmp_path / "stack",
            db,
            secret_redis,
            secret_redis,
            generators={
                "golden_cross_generator": {
                    "type": "golden_cross",
                    "interval_seconds": 2,
                    "settings": {"sma_short": 50, "sma_long": 200, "lookback_days": 5},
                }
            },
            watchlist=["AAPL", "MSFT"],
            extra_env={
                "FINNHUB_API_KEY": FINNHUB_KEY,
                "FINNHUB_BASE_URL": finnhub.base_url,
                "LOG_LEVEL": "DEBUG",
            },
        )
        events: CeleryProcess | None = None
        try:
            env = stack.env
            env["FINNHUB_API_KEY"] = FINNHUB_KEY
            # Flower's view: the task events stream (task-received carries args/kwargs).
            events = CeleryProcess(["events", "--dump"], env, tmp_path / "events.log")
            stack.start_workers(1)
            beat = start_beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule")
            stack.beats["beat"] = beat
            with KombuPublisher(secret_redis) as publisher:
                for n in range(3):
                    item = harness.make_signal(n, harness.TICKERS[n], f"sec-{uuid.uuid4()}")
                    publisher.publish(item.to_json(), item.routing_key)

            def failed_executions() -> list[Execution]:
                with db.session() as session:
                    return list(
                        session.execute(
                            select(Execution).where(Execution.status == "failed")
                        ).scalars()
                    )

            failed = wait_until(
                lambda: (
                    found if len(found := failed_executions()) >= 3 and finnhub.requests else []
                ),
                timeout=60,
                interval=0.5,
                message="the webhook failure path ran and the Finnhub key was used",
                detail=lambda: (len(failed_executions()), len(finnhub.requests)),
            )
            captured["metrics"] = _metrics(db, secret_redis)
            with db.session() as session:
                captured["db:executions"] = json.dumps(
                    [[e.error, e.outcome] for e in session.execute(select(Execution)).scalars()],
                    default=str,
                )
                captured["db:dead_letters"] = json.dumps(
                    [
                        [d.reason, d.headers, d.body.decode("utf-8", "replace")]
                        for d in session.execute(select(DeadLetter)).scalars()
                    ],
                    default=str,
                )
                captured["db:signals"] = json.dumps(
                    [s.last_publish_error for s in session.execute(select(SignalRecord)).scalars()]
                )
        finally:
            stack.close()
            if events is not None:
                events.stop()
            db.dispose()
        assert len(failed) >= 3, "the webhook failure path did not run"
        assert finnhub.requests, "the Finnhub key was never used"
    for path in [*stack.logs(), tmp_path / "events.log", tmp_path / "beat.log"]:
        captured[str(path.name)] = path.read_text(errors="replace")
    assert (
        "task-received" in captured["events.log"] or "pipelines.execute" in captured["events.log"]
    ), captured["events.log"][-2000:]
    assert "signalgen_queue_depth" in captured["metrics"], captured["metrics"][:2000]
    leaks = {
        (secret, where)
        for secret in SECRETS
        for where, text in captured.items()
        if secret in text or secret.split("-", 1)[1] in text
    }
    assert not leaks, sorted(leaks)


def _metrics(db: Database, redis_url: str) -> str:
    """The Prometheus text /metrics serves (the same collector the endpoint registers), built
    with the password-laden database, Redis and broker URLs of this run."""
    import redis
    from prometheus_client import CollectorRegistry, generate_latest

    from signalgen.config.operations import get_operations_config
    from signalgen.ops.metrics import BusCollector

    registry = CollectorRegistry(auto_describe=False)
    client = redis.Redis.from_url(redis_url, socket_timeout=3, socket_connect_timeout=3)
    registry.register(
        BusCollector(db, redis_client=client, broker_url=redis_url, config=get_operations_config())
    )
    try:
        return generate_latest(registry).decode("utf-8")
    finally:
        client.close()


# -- 3. constant-time comparisons, by inspection --------------------------------------------------

SECRETISH = ("secret", "token", "signature", "digest", "key_hash", "api_key", "password")


def test_secret_checks_use_compare_digest() -> None:
    from dispatcher import executors
    from signalgen.ingress import webhooks
    from signalgen.interfaces.http import auth

    for function in (webhooks.token_matches, webhooks.signature_matches):
        tree = ast.parse(Path(webhooks.__file__).read_text())
        node = next(
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef) and n.name == function.__name__
        )
        calls = {ast.unparse(c.func) for c in ast.walk(node) if isinstance(c, ast.Call)}
        assert "hmac.compare_digest" in calls, function.__name__
    assert "hmac.compare_digest" in Path(auth.__file__).read_text()
    assert executors.sign  # signing, not comparing: the receiver compares
    offenders = []
    for path in source_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        offenders += [
            f"{path.relative_to(PROJECT)}: {ast.unparse(node)}" for node in secret_equalities(tree)
        ]
    assert sorted(offenders) == sorted(ALLOWED_EQUALITIES), offenders


#: Reviewed `==` between secret-ish operands, and why each is not a timing leak.
ALLOWED_EQUALITIES = [
    # A SQL WHERE on the indexed SHA-256 of a random 256-bit key; the row found is then checked
    # with hmac.compare_digest (auth.py). Index timing reveals nothing usable about the key.
    "signalgen/interfaces/http/auth.py: ApiKey.key_hash == digest",
]


def secret_equalities(tree: ast.AST) -> list[ast.Compare]:
    """`a == b` / `a != b` where both operands are values (names, attributes, calls,
    subscripts) whose text mentions a secret-ish word."""
    values = (ast.Name, ast.Attribute, ast.Call, ast.Subscript)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare) or not any(
            isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
        ):
            continue
        operands = [node.left, *node.comparators]
        if not all(isinstance(x, values) for x in operands):
            continue
        if sum(any(word in ast.unparse(x).lower() for word in SECRETISH) for x in operands) >= 2:
            found.append(node)
    return found


def test_compare_digest_check_would_catch_an_equality() -> None:
    """The inspection above is not vacuous: it flags `==` between two secret-ish values."""
    assert secret_equalities(ast.parse("ok = given_token == source.secret"))
    assert secret_equalities(ast.parse("if header['signature'] != expected_digest: pass"))
    assert not secret_equalities(ast.parse("ok = (a.secret is None) == (a.secret_env is None)"))


# -- 4. SQL through bound parameters only ---------------------------------------------------------

SQL_CALLS = {"text", "exec_driver_sql", "execute", "executemany"}


def sql_fragments(tree: ast.AST) -> set[str]:
    """Module-level names bound to a plain string literal: constant SQL fragments, which an
    f-string may splice into a statement (no value can reach SQL that way)."""
    body = tree.body if isinstance(tree, ast.Module) else []
    return {
        node.targets[0].id
        for node in body
        if isinstance(node, ast.Assign)
        and len(node.targets) == 1
        and isinstance(node.targets[0], ast.Name)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    }


def splices_only_fragments(arg: ast.JoinedStr, fragments: set[str]) -> bool:
    return all(
        isinstance(part, ast.Constant)
        or (
            isinstance(part, ast.FormattedValue)
            and isinstance(part.value, ast.Name)
            and part.value.id in fragments
            and part.conversion == -1
            and part.format_spec is None
        )
        for part in arg.values
    )


def formatted_sql(tree: ast.AST) -> list[ast.Call]:
    """Calls of text()/execute()/exec_driver_sql() whose SQL is built by formatting (other than
    splicing the module's own constant SQL fragments)."""
    fragments = sql_fragments(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        name = (
            node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        )
        if name not in SQL_CALLS:
            continue
        arg = node.args[0]
        if (
            (isinstance(arg, ast.JoinedStr) and not splices_only_fragments(arg, fragments))
            or (
                isinstance(arg, ast.BinOp)
                and isinstance(arg.op, ast.Mod | ast.Add)
                and any(
                    isinstance(side, ast.Constant | ast.JoinedStr) for side in (arg.left, arg.right)
                )
            )
            or (
                isinstance(arg, ast.Call)
                and isinstance(arg.func, ast.Attribute)
                and arg.func.attr == "format"
            )
        ):
            found.append(node)
    return found


def test_sql_is_never_built_by_string_formatting() -> None:
    offenders = []
    for path in source_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        offenders += [
            f"{path.relative_to(PROJECT)}:{n.lineno}: {ast.unparse(n)[:120]}"
            for n in formatted_sql(tree)
        ]
    assert not offenders, offenders


@pytest.mark.parametrize(
    "code",
    [
        'session.execute(text(f"SELECT * FROM t WHERE id = {x}"))',
        'conn.exec_driver_sql("DELETE FROM t WHERE id = %s" % x)',
        "text(\"SELECT * FROM t WHERE name = '{}'\".format(name))",
        'session.execute(text("SELECT " + column + " FROM t"))',
        # A module-level name is a fragment only when bound to a literal.
        'WHERE = input()\ntext(f"SELECT * FROM t {WHERE}")',
        'FRAGMENT = "WHERE id = 1"\ntext(f"SELECT * FROM t {FRAGMENT!r}")',
    ],
)
def test_sql_inspection_catches_formatting(code: str) -> None:
    assert formatted_sql(ast.parse(code))


def test_splicing_a_constant_sql_fragment_is_allowed() -> None:
    code = (
        'FRAGMENT = "SELECT id FROM t"\ntext(f"WITH picked AS ({FRAGMENT}) SELECT * FROM picked")'
    )
    assert formatted_sql(ast.parse(code)) == []
