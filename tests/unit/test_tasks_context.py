"""One worker context per process (tasks/context.py): built once, never inherited across a fork."""

from __future__ import annotations

import os
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

import tasks.context as context
from tasks import app


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    built: list[Any] = []

    def build() -> Any:
        built.append(SimpleNamespace(closed=False))
        return built[-1]

    monkeypatch.setattr(context, "build_context", build)
    context.use_context(None)
    yield built
    context.use_context(None)


def test_built_once_per_process(builds: list[Any]) -> None:
    first = context.init_worker_context()
    assert context.current() is first and context.init_worker_context() is first
    assert builds == [first]


def test_a_forked_child_builds_its_own(builds: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    parent = context.current()
    monkeypatch.setattr(os, "getpid", lambda: -1)  # as seen from a pool child
    child = context.current()
    assert child is not parent and builds == [parent, child]


def test_tasks_read_the_context(builds: list[Any]) -> None:
    app.loader.import_default_modules()
    assert app.tasks["pipelines.execute"].ctx is context.current()


def test_shutdown_closes_only_this_process_context(
    builds: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    closed: list[Any] = []
    ctx: Any = context.current()
    ctx.close = lambda: closed.append(ctx)
    with monkeypatch.context() as patch:
        patch.setattr(os, "getpid", lambda: -1)
        context.close_worker_context()  # a child that inherited the parent's: not its to close
    assert closed == []
    ctx = context.current()
    ctx.close = lambda: closed.append(ctx)
    context.close_worker_context()
    assert closed == [ctx]


def test_a_set_up_worker_process_freezes_its_heap() -> None:
    """Start-up objects leave the cyclic collector's reach once the consumer is ready (a full
    collection over them paused a worker 70-200 ms, bench/dispatch.py); later objects do not."""
    import gc

    from celery import signals

    import tasks  # noqa: F401 (connects the handlers)

    def frozen(thing: object) -> bool:  # in the permanent generation: no generation lists it
        return not any(o is thing for o in gc.get_objects())

    gc.unfreeze()
    try:
        before = gc.get_freeze_count()
        assert before == 0
        start_up: list[object] = []  # made before the worker is ready
        assert not frozen(start_up)
        signals.worker_ready.send(sender=None)
        assert gc.get_freeze_count() > 1000
        assert frozen(start_up)
        later: list[object] = []
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # what came after is still collected
        assert frozen(start_up)  # a collection leaves the frozen heap frozen
        assert not frozen(later)
        # (The freeze count itself may drop: a frozen object freed by its reference count, on
        # another thread of this process, leaves the permanent generation.)
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
