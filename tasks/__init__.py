"""The Celery application: `celery -A tasks worker|beat|flower`.

Tasks here are thin: validate the payload into a `schemas` model, call `generators/` or
`dispatcher/`, map errors to retry or dead-letter. Settings live in `celeryconfig.py`.

Process hooks build resources explicitly: JSON logging for every process, the database schema
once at worker start, the worker context (tasks/context.py) in each pool child.
"""

from typing import Any

from celery import Celery, signals

from signalgen.bus import kombu_compat

kombu_compat.install()  # before any broker connection: guards against upstream bugs (see there)

# Every task runs through tasks.middleware (rate gate, retries, dead letters by declared policy).
app = Celery("signalgen", task_cls="tasks.middleware:PolicyTask")
app.config_from_object("celeryconfig")


@signals.setup_logging.connect
def _configure_logging(**_: Any) -> None:
    from signalgen.logs import configure_logging
    from signalgen.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@signals.beat_init.connect
def _warn_mock_outside_dev(**_: Any) -> None:
    # Beat is what sends the mock generator's ticks: say so when it does outside `signalgen dev`.
    from signalgen.config import warn_mock_outside_dev
    from signalgen.settings import get_settings

    warn_mock_outside_dev(get_settings())


@signals.worker_init.connect
def _ensure_schema(**_: Any) -> None:
    # In a short-lived child: migrations (Alembic, SQLAlchemy DDL) would otherwise stay resident
    # in every worker for its whole life, and the pool must not inherit its connections.
    import subprocess
    import sys

    code = "from signalgen.startup import ensure_schema_main\nensure_schema_main()\n"
    done = subprocess.run(  # noqa: S603 (our own interpreter, fixed code)
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        if len(lines) == 1:  # a recognised failure: what, where, what to try
            raise SystemExit(f"database schema check failed: {lines[0]}")
        raise SystemExit(f"database schema check failed:\n{done.stderr[-4000:]}")
    _freeze_heap()  # before the pool forks: children inherit it frozen (and share its pages)


@signals.worker_process_init.connect
def _build_context(**_: Any) -> None:
    import threading

    from tasks.context import init_worker_context

    context = init_worker_context()  # in each pool child, after the fork: its own connections
    # In the background: a child must report ready within `worker_proc_alive_timeout` (4 s),
    # and a slow or absent database must not make the pool respawn it. A task arriving first
    # simply waits on the same locks, as it would have without the warm-up.
    threading.Thread(target=_warm_up, args=(context,), name="warm-up", daemon=True).start()


def _warm_up(context: Any) -> None:
    import logging

    from signalgen.logs import log_event

    try:
        context.warm_up()
    except Exception as exc:  # first tasks then build lazily, and report the outage themselves
        log_event(
            logging.getLogger("tasks"),
            "worker_warm_up_failed",
            logging.WARNING,
            reason=f"{type(exc).__name__}: {exc}",
        )
    finally:
        _freeze_heap()


@signals.worker_ready.connect
def _freeze_consumer_heap(**_: Any) -> None:
    _freeze_heap()  # the main process: its consumer, intake and connections are set up


def _freeze_heap() -> None:
    """Move every object alive now out of the cyclic collector's reach (`gc.freeze`).

    A full (generation 2) collection walks every tracked object; in a worker that holds the
    app, SQLAlchemy, pydantic and the match index that took 70-200 ms, a pause that stalled
    every signal in flight (bench/dispatch.py saw p99 jump from 15 to 60 ms in such runs).
    Objects made at start-up live as long as the process, so scanning them finds nothing:
    frozen once the process is set up, later collections only walk what came after."""
    import gc

    gc.freeze()


@signals.worker_process_shutdown.connect
def _close_context(**_: Any) -> None:
    from tasks.context import close_worker_context

    close_worker_context()


def _register_consumer_steps() -> None:
    # The dispatcher's intake of plain-JSON signals runs inside the worker's consumer.
    from tasks.dispatch import SignalIntake

    app.steps["consumer"].add(SignalIntake)


_register_consumer_steps()

__all__ = ["app"]
