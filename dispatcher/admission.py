"""What a pipeline write must pass besides its schema: the operator's policies.

Schema validation (`schemas.pipeline`) says whether a pipeline is well formed; admission says
whether *this service* lets a user have it. It runs inside the write's transaction, for every
path that writes pipelines (HTTP API, CLI, imports), through `dispatcher.store`:

- `admit_spec(session, spec)` before the write: the executor may reach only what the operator
  allows (`dispatcher.egress`: webhook URLs outside refused networks, Celery tasks on the
  allowlist) and the scanner is within the per-scanner quota (`dispatcher.quotas`).
- `admit_totals(session, owners)` after the write is flushed, before it commits: each owner's
  totals (pipelines, scanner entries) are within quota; otherwise the whole write rolls back.

A refusal is `Refused`, naming the field at fault, the reason, and whether it is a quota (HTTP
409) or an invalid value (HTTP 422).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from schemas.pipeline import PipelineSpec


class Refused(ValueError):
    """A pipeline the operator's policy does not allow. `field` is dotted (`executor.url`)."""

    def __init__(self, field: str, reason: str, *, quota: bool = False) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.quota = quota

    @property
    def status_code(self) -> int:
        return 409 if self.quota else 422


def admit_spec(session: Any, spec: PipelineSpec) -> None:
    """Refused unless the operator's policies allow `spec` (before it is written)."""
    from dispatcher import egress, quotas

    egress.check_executor(spec.executor)
    quotas.check_spec(spec)


def admit_totals(session: Any, owners: Iterable[str]) -> None:
    """Refused unless every owner's totals are within quota (after the write is flushed)."""
    from dispatcher import quotas

    quotas.check_totals(session, set(owners))
