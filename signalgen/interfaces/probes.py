"""Container healthchecks (docker-compose.yml):
`python -m signalgen.interfaces.probes beat PATH [MAX_AGE]`
and `python -m signalgen.interfaces.probes http URL`. Exit 0 healthy, 1 not, with one line saying
why.

Beat has no ping: it is healthy while its schedule file (any `PATH*`: the dbm backend may add
a suffix) keeps being written. Beat records every send in it and syncs it to disk at least every
3 minutes (Celery's `sync_every`) while it sends (the outbox sweep is due every few seconds), so
a file older than MAX_AGE (default 600 s) means a beat that stopped scheduling.
"""

from __future__ import annotations

import sys
import time
import urllib.request
from pathlib import Path

DEFAULT_MAX_AGE_SECONDS = 600.0


def beat_problem(path: Path, max_age: float, now: float | None = None) -> str | None:
    """Why the beat whose schedule file is `path` is unhealthy; None when it is healthy."""
    files = [p for p in path.parent.glob(path.name + "*") if p.is_file()]
    if not files:
        return f"no schedule file {path}* yet"
    age = (time.time() if now is None else now) - max(p.stat().st_mtime for p in files)
    if age > max_age:
        return f"schedule file {path} not written for {age:.0f} s (more than {max_age:.0f} s)"
    return None


def http_problem(url: str, timeout: float = 5.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 (a local URL)
            status = int(answer.status)
    except Exception as exc:
        return f"{url}: {type(exc).__name__}: {exc}"
    return None if status == 200 else f"{url}: HTTP {status}"


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "beat":
        max_age = float(argv[2]) if len(argv) > 2 else DEFAULT_MAX_AGE_SECONDS
        problem = beat_problem(Path(argv[1]), max_age)
    elif len(argv) == 2 and argv[0] == "http":
        problem = http_problem(argv[1])
    else:
        problem = "usage: python -m signalgen.interfaces.probes beat PATH [MAX_AGE] | http URL"
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
