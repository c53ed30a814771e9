"""Task policy in one place (tasks/middleware.py): every task runs through it, retries only what
it declares transient, dead-letters what it declares, and gates executions by owner limits."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import select

import signalgen.storage
from signalgen.storage import Database
from signalgen.storage.models import DeadLetter
from tasks import app
from tasks.middleware import OUTAGES, Policy, PolicyTask, bus_task


@pytest.fixture(scope="module")
def registered() -> dict[str, Any]:
    app.loader.import_default_modules()
    return {name: task for name, task in app.tasks.items() if not name.startswith("celery.")}


def test_every_registered_task_goes_through_the_middleware(registered: dict[str, Any]) -> None:
    assert "pipelines.execute" in registered and "marketdata.backfill" in registered
    for name, task in registered.items():
        assert isinstance(task, PolicyTask), name
        assert getattr(type(task).run, "policy_applied", False), name


def test_policies_are_declared_with_each_task(registered: dict[str, Any]) -> None:
    dead_lettered = {name for name, task in registered.items() if task.policy.dead_letter}
    assert dead_lettered == {
        "signals.dispatch",
        "signals.dispatch_batch",
        "pipelines.execute",
        "signals.generate",
        "signals.outbox_sweep",
        "pipelines.fire_periodic",
    }
    gated = {name for name, task in registered.items() if task.policy.rate_gated}
    assert gated == {"pipelines.execute"}
    for name in ("signals.dispatch", "signals.dispatch_batch", "pipelines.execute"):
        assert registered[name].policy.transient == OUTAGES
        assert registered[name].max_retries == 20
    assert not registered["signals.replay"].policy.transient
    for name, task in registered.items():
        assert Exception not in task.policy.transient, name  # transient means declared, narrow


def test_registration_refuses_undeclared_retries_and_unknown_options() -> None:
    with pytest.raises(TypeError, match="no transient errors"):
        bus_task("test.retries", max_retries=3)
    with pytest.raises(TypeError):
        bus_task("test.unknown", autoretry_for=(Exception,))  # type: ignore[call-arg]


# -- behaviour, on a scratch app with the same task class ---------------------------------------


@pytest.fixture
def scratch() -> Iterator[Celery]:
    scratch_app = Celery("middleware-test", task_cls=PolicyTask, set_as_current=False)
    scratch_app.conf.task_always_eager = False
    yield scratch_app


@pytest.fixture
def dead_letters(sqlite_db: Database, monkeypatch: pytest.MonkeyPatch) -> Database:
    monkeypatch.setattr(signalgen.storage, "get_database", lambda url=None: sqlite_db)
    return sqlite_db


def _failing(
    scratch: Celery, name: str, policy: Policy, error: BaseException
) -> tuple[Any, list[int]]:
    calls: list[int] = []

    def body(self: Any, value: int) -> int:
        calls.append(value)
        raise error

    task = scratch.task(name=name, bind=True, policy=policy, max_retries=2)(body)
    return task, calls


def _stages(db: Database) -> list[str]:
    with db.session() as session:
        return list(session.execute(select(DeadLetter.stage)).scalars())


def test_an_error_not_declared_transient_is_not_retried(
    scratch: Celery, dead_letters: Database
) -> None:
    policy = Policy(transient=(ConnectionError,), dead_letter=True)
    task, calls = _failing(scratch, "t.bug", policy, ValueError("a bug, not an outage"))
    result = task.apply((7,))
    assert isinstance(result.result, ValueError)
    assert calls == [7]  # once: no retry
    assert _stages(dead_letters) == ["task"]


def test_a_declared_transient_error_is_retried_then_dead_lettered(
    scratch: Celery, dead_letters: Database
) -> None:
    policy = Policy(transient=(ConnectionError,), dead_letter=True)
    task, calls = _failing(scratch, "t.outage", policy, ConnectionRefusedError(111, "refused"))
    result = task.apply((7,))
    assert isinstance(result.result, ConnectionRefusedError)
    assert calls == [7, 7, 7]  # the first run and max_retries=2 retries
    assert _stages(dead_letters) == ["task"]


def test_a_task_not_declaring_dead_letters_leaves_none(
    scratch: Celery, dead_letters: Database
) -> None:
    task, calls = _failing(scratch, "t.operator", Policy(), RuntimeError("operator input"))
    task.apply((1,))
    assert calls == [1]
    assert _stages(dead_letters) == []


def test_a_plain_task_runs_unchanged(scratch: Celery) -> None:
    def add(a: int, b: int = 1) -> int:
        return a + b

    plain = scratch.task(name="t.plain")(add)
    assert isinstance(plain, PolicyTask) and plain.policy == Policy()
    assert plain.apply((2,), {"b": 3}).result == 5


def test_the_rate_gate_holds_back_an_execution_over_its_owner_limit(
    scratch: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signalgen.ops.ratelimit as ratelimit
    from signalgen.ops.ratelimit import Verdict

    ran: list[int] = []
    limits = SimpleNamespace(enabled=True)
    ctx = SimpleNamespace(operations=SimpleNamespace(rate_limits=limits), dispatcher=None)
    ctx.dispatcher = SimpleNamespace(db=None)
    ctx.redis = None
    monkeypatch.setattr(PolicyTask, "ctx", property(lambda self: ctx))
    verdicts = iter([Verdict("run", "u1"), Verdict("record", "u1", reason="over")])
    monkeypatch.setattr(ratelimit, "check_execution", lambda *a, **k: next(verdicts))

    def body(self: Any, execution_id: int, published_at: float | None = None) -> str:
        ran.append(execution_id)
        return "succeeded"

    execute = scratch.task(name="t.execute", bind=True, policy=Policy(rate_gated=True))(body)
    assert execute.apply((5,)).result == "succeeded"
    assert execute.apply((6,)).result == "rate_limited"
    assert ran == [5]
