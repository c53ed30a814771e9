"""`GET /metrics`: Prometheus text format, every number read at scrape time (see
`signalgen.ops.metrics` for what is exported and why one exporter suffices)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from signalgen.interfaces.http.opsdeps import (
    app_resource,
    broker_url,
    database,
    operations_config,
    redis_url,
)

router = APIRouter(tags=["operations"])


def _registry(request: Request) -> CollectorRegistry:
    def build() -> CollectorRegistry:
        import redis

        from signalgen.ops.metrics import BusCollector

        registry = CollectorRegistry(auto_describe=False)
        client = redis.Redis.from_url(
            redis_url(request), socket_timeout=3, socket_connect_timeout=3
        )
        registry.register(
            BusCollector(
                database(request),
                redis_client=client,
                broker_url=broker_url(request),
                config=operations_config(request),
            )
        )
        return registry

    registry: CollectorRegistry = app_resource(request, "metrics_registry", build)
    return registry


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    registry = _registry(request)
    body = await run_in_threadpool(generate_latest, registry)  # SQL and broker reads block
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
