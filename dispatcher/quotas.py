"""Per-user quotas on pipelines (being written)."""

from __future__ import annotations

from typing import Any

from schemas.pipeline import PipelineSpec


def check_spec(spec: PipelineSpec) -> None:
    """Refused when one pipeline alone is over a per-pipeline quota."""


def check_totals(session: Any, owners: set[str]) -> None:
    """Refused when an owner's totals are over quota."""
