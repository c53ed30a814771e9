"""Run every benchmark module in `bench/` (or only those named on the command line)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from collections.abc import Callable
from pathlib import Path


def names() -> list[str]:
    """Every `bench/*.py` module not starting with _, by name."""
    return sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if not m.name.startswith("_") and not m.ispkg
    )


def discover(
    *, everything: bool = True, only: list[str] | None = None
) -> dict[str, Callable[[], None]]:
    """Module name -> its `run`, for every `bench/*.py` (not starting with _) that has one, or
    for the `only` ones (the others are not imported). With `everything` False, modules that set
    `RUN_BY_DEFAULT = False` (the soak) are left out."""
    found: dict[str, Callable[[], None]] = {}
    for name in names() if only is None else only:
        module = importlib.import_module(f"bench.{name}")
        run = getattr(module, "run", None)
        if callable(run) and (everything or getattr(module, "RUN_BY_DEFAULT", True)):
            found[name] = run
    return found


def main(argv: list[str]) -> int:
    known = names()
    unknown = [name for name in argv if name not in known]
    if unknown:
        print(
            f"unknown bench(es): {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr
        )
        return 2
    benches = discover(only=argv) if argv else discover(everything=False)
    without_run = [name for name in argv if name not in benches]
    if without_run:
        print(f"no run() in: {', '.join(without_run)}", file=sys.stderr)
        return 2
    for name in benches:
        print(f"== bench.{name}", flush=True)
        started = time.perf_counter()
        benches[name]()
        print(f"== bench.{name} done in {time.perf_counter() - started:.1f} s\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
