"""Celery settings for `celery -A tasks ...`. Built from the environment via signalgen.settings.

JSON only (pickle refused), late acks with prefetch 1 so a killed worker's task is redelivered,
task events on so Flower sees every task, UTC, broker retries on start-up.

`beat_schedule` is built from `config/` (one entry per enabled generator, each with `expires`).
Bad configuration stops `celery -A tasks worker|beat` here, at start-up, with the file and field.
"""

from kombu import Queue

from signalgen.bus.topology import (
    DEFAULT_QUEUE,
    DISPATCH_QUEUE,
    GENERATE_QUEUE,
    PIPELINES_QUEUE,
    SIGNALS_QUEUE,
    TASK_QUEUES,
)
from signalgen.config import ConfigError
from signalgen.settings import get_settings
from tasks.schedules import build_beat_schedule

try:
    _settings = get_settings()
except ValueError as _error:  # pydantic's ValidationError: a malformed variable, named
    from signalgen.startup import failure_line

    _line = failure_line(_error)
    if _line is None:
        raise
    raise SystemExit(_line) from None

broker_url = _settings.broker_url
broker_connection_retry_on_startup = True
broker_transport_options = {
    # Longer than the longest task (a webhook with its retries, a replay batch): a task still
    # running when this expires would be redelivered to another worker while it runs.
    "visibility_timeout": 3600,
}

include = [
    "tasks.signals",
    "tasks.dispatch",
    "tasks.pipelines",
    "tasks.ops",
    "tasks.repair",
    "tasks.refused",
    "tasks.backfill",
]

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
# Refused messages (pickle, undecodable, unknown task) are dead-lettered, not only dropped.
worker_consumer = "tasks.refused:RefusingConsumer"
event_serializer = "json"

task_ignore_result = True
result_backend = None

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

worker_send_task_events = True
task_send_sent_event = True
task_track_started = True

enable_utc = True
timezone = "UTC"

worker_hijack_root_logger = False

# Generation on its own queue, consumed by its own workers: a provider that hangs holds those
# workers only, never dispatch or executions (see signalgen/bus/topology.py for the worker
# commands).
task_default_queue = DEFAULT_QUEUE
task_queues = tuple(Queue(name) for name in TASK_QUEUES)
task_routes = {
    "signals.generate": {"queue": GENERATE_QUEUE},
    "marketdata.backfill": {"queue": GENERATE_QUEUE},  # waits on a provider, like generation
    "signals.dispatch": {"queue": DISPATCH_QUEUE},
    "signals.dispatch_batch": {"queue": DISPATCH_QUEUE},
    "signals.*": {"queue": SIGNALS_QUEUE},
    "pipelines.*": {"queue": PIPELINES_QUEUE},
}

# Each schedule slot sent once, whatever the number of beats and restarts (a Redis marker per
# entry and slot; see tasks/beatlock.py). Hot standby: any number of beats, one sends (a lock).
beat_scheduler = "tasks.beatlock:SlotScheduler"
if _settings.beat_lock:
    beat_scheduler = "tasks.beatlock:LockedScheduler"

try:
    beat_schedule = build_beat_schedule(_settings)
except ConfigError as _error:
    # SystemExit, not a traceback: worker and beat stop at start-up naming the file and field.
    raise SystemExit(f"configuration error: {_error}") from None
