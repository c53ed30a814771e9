"""What the bus benchmarks share beside `bench.dispatch`'s scratch services: pipelines, real
`celery -A tasks worker` processes started as an operator would start them, their process trees
and their memory."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def register_pipelines(db: Any, redis_url: str, specs: Sequence[dict[str, Any]]) -> None:
    """Register signal-triggered pipelines: each spec is a PipelineSpec's fields without
    `trigger_mode` (owner, name, scanner, executor...)."""
    from dispatcher.store import import_specs
    from schemas.pipeline import PipelineSpec

    import_specs(
        db,
        [PipelineSpec.model_validate({"trigger_mode": "signal", **spec}) for spec in specs],
        redis_url=redis_url,
    )


def worker_env(redis_url: str, pg_url: str, directory: Path, **extra: str) -> dict[str, str]:
    """The environment of a bench worker: the scratch services, no generator enabled (beat is
    not started anyway), warnings only."""
    generators = directory / "generators.json"
    generators.write_text(
        json.dumps(
            {
                "generators": {
                    "mock_generator": {"type": "mock", "enabled": False, "interval_seconds": 60}
                }
            }
        )
    )
    return dict(
        os.environ,
        BROKER_URL=redis_url,
        REDIS_URL=redis_url,
        DATABASE_URL=pg_url,
        GENERATORS_CONFIG_PATH=str(generators),
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        **extra,
    )


def start_workers(
    env: dict[str, str],
    log: Any,
    *,
    count: int,
    concurrency: int,
    queues: Sequence[str] = (),
) -> list[subprocess.Popen[bytes]]:
    """`count` x `celery -A tasks worker --concurrency=N`, each in its own session (so
    `stop_workers` ends the whole tree); `queues` empty: every queue (Celery's default)."""
    options = [f"--queues={','.join(queues)}"] if queues else []
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "tasks",
                "worker",
                f"--concurrency={concurrency}",
                "--without-gossip",
                "--without-mingle",
                *options,
                "-n",
                f"bench{n}@%h",
                "--loglevel=WARNING",
            ],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for n in range(count)
    ]


def stop_workers(workers: Sequence[subprocess.Popen[bytes]]) -> None:
    """Warm shutdown (SIGTERM to each worker's process group), SIGKILL after 20 s."""
    for worker in workers:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, 15)
    for worker in workers:
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, 9)
            worker.wait(10)


def process_tree(roots: Sequence[int]) -> list[int]:
    """`roots` and all their descendants (Linux /proc; only `roots` elsewhere)."""
    found: list[int] = []
    todo = list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        directory = Path(f"/proc/{pid}/task")
        for task in directory.glob("*") if directory.exists() else []:
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of `pid` in MiB (Linux /proc/<pid>/smaps_rollup; NaN where unreadable).
    RSS counts pages shared with the other pool processes in each; PSS splits them."""
    values = {"Rss:": float("nan"), "Pss:": float("nan")}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(" ")
            if key in values:
                values[key] = int(rest.split()[0]) / 1024
    return values["Rss:"], values["Pss:"]


def print_memory(label: str, roots: Sequence[int]) -> dict[str, float]:
    """One line per worker process (main first, then its pool children): RSS and PSS."""
    out: dict[str, float] = {}
    for root in roots:
        for n, pid in enumerate(process_tree([root])):
            rss, pss = memory_mb(pid)
            role = "main " if n == 0 else f"child{n}"
            out[f"{root}:{role.strip()}"] = rss
            print(f"  RSS {label}: worker {root} {role} {rss:6.1f} MiB (PSS {pss:6.1f} MiB)")
    return out
