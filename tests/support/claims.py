"""Pipelines and one signal for the claims tests (SQLite and PostgreSQL alike)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from dispatcher.matching import MatchIndex
from dispatcher.store import import_specs, load_signal_scanners
from schemas.pipeline import PipelineSpec
from signalgen.storage import Database

T0 = datetime(2025, 1, 2, 9, 0, tzinfo=UTC)


def pipelines_and_signal(db: Database, count: int = 3) -> tuple[MatchIndex, str]:
    """`count` pipelines scanning AAPL in `db`, their match index, and a new signal's JSON."""
    specs = [
        PipelineSpec.model_validate(
            {
                "owner": "u",
                "name": f"p{n}",
                "trigger_mode": "signal",
                "scanner": {"tickers": ["AAPL"]},
            }
        )
        for n in range(count)
    ]
    import_specs(db, specs, redis_url="redis://127.0.0.1:1/0")  # bump fails: logged only
    return MatchIndex.build(load_signal_scanners(db)), signal_payload()


def signal_payload(at: datetime = T0, *, source: str = "t") -> str:
    """A new golden-cross signal's JSON (a fresh id each call) on AAPL, made and happened at
    `at`."""
    return json.dumps(
        {
            "signal_id": str(uuid.uuid4()),
            "signal_type": "golden_cross",
            "tickers": ["AAPL"],
            "bias": {},
            "timestamp": at.isoformat(),
            "event_time": at.isoformat(),
            "source": source,
        }
    )
