"""Operations settings: provider cost per call, generator budgets, per-owner execution limits.

Read from `config/operations.json` (or `OPERATIONS_CONFIG_PATH`); a missing file means the
defaults below (no budgets, a generous per-owner limit). A mistake stops start-up naming the file
and the field, like every other file under `config/`.

    {
      "currency": "USD",
      "cost_per_call": {"finnhub": 0.0005},
      "budgets": {
        "default": {"calls_per_hour": null, "calls_per_day": null, "cost_per_day": null},
        "generators": {"golden_cross_generator": {"calls_per_day": 2000}}
      },
      "rate_limits": {
        "on_limit": "defer",
        "max_defer_seconds": 1800,
        "default": {"executions": 600, "window_seconds": 60},
        "owners": {"alice": {"executions": 10, "window_seconds": 60}}
      }
    }
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

_STRICT = ConfigDict(frozen=True, extra="forbid")


class Budget(BaseModel):
    """Provider calls one generator may make. Any limit left null is not enforced."""

    model_config = _STRICT

    calls_per_hour: int | None = Field(default=None, ge=0)
    calls_per_day: int | None = Field(default=None, ge=0)
    #: Money per UTC day, turned into calls with the provider's `cost_per_call`.
    cost_per_day: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    def daily_calls(self, cost_per_call: float) -> int | None:
        """The tighter of `calls_per_day` and `cost_per_day / cost_per_call`, or None."""
        limits = [self.calls_per_day] if self.calls_per_day is not None else []
        if self.cost_per_day is not None and cost_per_call > 0:
            limits.append(math.floor(self.cost_per_day / cost_per_call + 1e-9))
        return min(limits) if limits else None


class Budgets(BaseModel):
    model_config = _STRICT

    default: Budget = Budget()
    generators: dict[str, Budget] = Field(default_factory=dict)

    def for_generator(self, name: str) -> Budget:
        return self.generators.get(name, self.default)


class OwnerLimit(BaseModel):
    """At most `executions` pipeline executions of one owner in any `window_seconds`."""

    model_config = _STRICT

    executions: int = Field(ge=1)
    window_seconds: float = Field(gt=0, le=86400, allow_inf_nan=False)


class RateLimits(BaseModel):
    model_config = _STRICT

    #: `defer`: re-enqueue with a countdown until a slot frees (up to `max_defer_seconds`,
    #: then `record`); `record`: mark the execution `rate_limited` for a later replay.
    on_limit: Literal["defer", "record"] = "defer"
    max_defer_seconds: float = Field(default=1800, ge=0, le=3000)
    #: The limit of every owner not listed in `owners`; None (the default): unlimited.
    default: OwnerLimit | None = None
    owners: dict[str, OwnerLimit] = Field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.default is not None or bool(self.owners)

    def for_owner(self, owner: str) -> OwnerLimit | None:
        return self.owners.get(owner, self.default)


#: Task-name prefixes and queues that belong to this service: never a user's Celery executor.
RESERVED_TASK_PREFIXES = ("signals.", "pipelines.", "marketdata.", "celery.")
RESERVED_QUEUES = frozenset(
    {"generate", "signals", "signals.dispatch", "pipelines", "dispatch", "celery"}
)


class CeleryTarget(BaseModel):
    """One Celery task a pipeline's `celery` executor may send, and the queues it may use."""

    model_config = _STRICT

    task: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z_][\w.:\-]*$")
    queues: tuple[str, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _not_ours(self) -> CeleryTarget:
        if self.task.startswith(RESERVED_TASK_PREFIXES):
            raise ValueError(f"task {self.task!r} is one of this service's own tasks")
        for queue in self.queues:
            reserved = queue.startswith(("signals.", "pipelines.", "celery", "amq."))
            if reserved or queue in RESERVED_QUEUES:
                raise ValueError(f"queue {queue!r} is one of this service's own queues")
        return self


class ExecutorPolicy(BaseModel):
    """What users' executors may reach. Default: no Celery task at all (operators allow each)."""

    model_config = _STRICT

    celery_tasks: tuple[CeleryTarget, ...] = ()

    def celery_target(self, task: str) -> CeleryTarget | None:
        for target in self.celery_tasks:
            if target.task == task:
                return target
        return None


class Quotas(BaseModel):
    """Per-user limits on what a user may create (None: unlimited). Admins are bound too."""

    model_config = _STRICT

    pipelines_per_user: int | None = Field(default=100, ge=0)
    tickers_per_scanner: int | None = Field(default=500, ge=1)
    scanner_entries_per_user: int | None = Field(default=5000, ge=0)
    api_writes_per_minute: int | None = Field(default=60, ge=1)


class OperationsConfig(BaseModel):
    model_config = _STRICT

    currency: str = Field(default="USD", min_length=1, max_length=8)
    cost_per_call: dict[str, float] = Field(default_factory=lambda: {"finnhub": 0.0})
    budgets: Budgets = Budgets()
    rate_limits: RateLimits = RateLimits()
    executors: ExecutorPolicy = ExecutorPolicy()
    quotas: Quotas = Quotas()

    @model_validator(mode="after")
    def _finite_costs(self) -> OperationsConfig:
        for provider, cost in self.cost_per_call.items():
            if not math.isfinite(cost) or cost < 0:
                raise ValueError(f"cost_per_call.{provider}: must be a finite number >= 0")
        return self

    def cost_of(self, provider: str) -> float:
        return self.cost_per_call.get(provider, 0.0)


def operations_config_path() -> Path:
    """OPERATIONS_CONFIG_PATH as the environment says now: read afresh, not from the cached
    `get_settings()`, because `get_operations_config` is the cache (cleared, it reads again)."""
    from signalgen.settings import Settings

    return Settings().operations_config_path


def load_operations_config(path: Path | None = None) -> OperationsConfig:
    """The file at `path` (default: OPERATIONS_CONFIG_PATH or config/operations.json).
    Missing file: defaults. Invalid file: ConfigError naming file and field."""
    from signalgen.config import load_json_model

    path = path or operations_config_path()
    if not path.exists():
        return OperationsConfig()
    return load_json_model(path, OperationsConfig)


@functools.cache
def get_operations_config() -> OperationsConfig:
    """This process's operations config, read once."""
    return load_operations_config()
