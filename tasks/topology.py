"""Exchanges and queues of the bus, declared once, used by publishers, consumers and workers."""

from kombu import Exchange, Queue

#: Every signal, as plain JSON, for any subscriber in any language.
SIGNAL_EXCHANGE = Exchange("trading-signals", type="topic", durable=True)

#: The dispatcher's subscription to the exchange (plain JSON signals, not Celery messages).
DISPATCH_INTAKE_QUEUE = Queue(
    "signals.dispatch", exchange=SIGNAL_EXCHANGE, routing_key="signal.#", durable=True
)

# Celery task queues (Celery's own message format).
SIGNALS_QUEUE = "signals"  # signals.generate, signals.outbox_sweep, signals.replay
DISPATCH_QUEUE = "dispatch"  # signals.dispatch
PIPELINES_QUEUE = "pipelines"  # pipelines.execute, pipelines.fire_periodic
