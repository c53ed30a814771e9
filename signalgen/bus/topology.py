"""Exchanges and queues of the bus, declared once, used by publishers, consumers and workers.

Generation and delivery never share a worker: `signals.generate` waits on market data (a hanging
provider holds it for as long as its timeouts allow), while a signal's dispatch and its pipelines'
executions must start at once. So `signals.generate` has its own queue, consumed by generation
workers only, and every other queue is consumed by delivery workers:

    celery -A tasks worker -Q generate -n generate@%h                        # generation
    celery -A tasks worker -Q celery,signals,dispatch,pipelines -n worker@%h  # delivery

A worker started without `-Q` consumes every queue (Celery's default) and works, but a busy
generator then holds pool processes that dispatch needs; it logs `worker_queues_shared` at start.
"""

from kombu import Exchange, Queue

#: Every signal, as plain JSON, for any subscriber in any language.
SIGNAL_EXCHANGE = Exchange("trading-signals", type="topic", durable=True)

#: The dispatcher's subscription to the exchange (plain JSON signals, not Celery messages).
DISPATCH_INTAKE_QUEUE = Queue(
    "signals.dispatch", exchange=SIGNAL_EXCHANGE, routing_key="signal.#", durable=True
)

# Celery task queues (Celery's own message format).
DEFAULT_QUEUE = "celery"  # anything unrouted
GENERATE_QUEUE = "generate"  # signals.generate
SIGNALS_QUEUE = "signals"  # signals.outbox_sweep, signals.replay, signals.repair
DISPATCH_QUEUE = "dispatch"  # signals.dispatch
PIPELINES_QUEUE = "pipelines"  # pipelines.execute, pipelines.fire_periodic

#: Every Celery task queue, in `task_queues` order.
TASK_QUEUES = (DEFAULT_QUEUE, GENERATE_QUEUE, SIGNALS_QUEUE, DISPATCH_QUEUE, PIPELINES_QUEUE)

#: `--queues` of a generation worker: market data in, signals published.
GENERATION_WORKER_QUEUES = (GENERATE_QUEUE,)
#: `--queues` of a delivery worker: intake, dispatch, executions, outbox, repair, replay. The
#: dispatcher's intake (`signals.dispatch`) runs only on workers consuming `dispatch`.
DELIVERY_WORKER_QUEUES = (DEFAULT_QUEUE, SIGNALS_QUEUE, DISPATCH_QUEUE, PIPELINES_QUEUE)


def queues_option(queues: tuple[str, ...]) -> str:
    """The worker option selecting `queues`: `--queues=a,b`."""
    return "--queues=" + ",".join(queues)
