"""Run every benchmark module in `bench/` (or only those named on the command line)."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from collections.abc import Callable
from pathlib import Path


def discover(*, everything: bool = True) -> dict[str, Callable[[], None]]:
    """Module name -> its `run`, for every `bench/*.py` (not starting with _) that has one.
    With `everything` False, modules that set `RUN_BY_DEFAULT = False` (the soak) are left out."""
    found: dict[str, Callable[[], None]] = {}
    for module_info in sorted(
        pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name
    ):
        if module_info.name.startswith("_") or module_info.ispkg:
            continue
        module = importlib.import_module(f"bench.{module_info.name}")
        run = getattr(module, "run", None)
        if callable(run) and (everything or getattr(module, "RUN_BY_DEFAULT", True)):
            found[module_info.name] = run
    return found


def main(argv: list[str]) -> int:
    benches = discover()
    unknown = [name for name in argv if name not in benches]
    if unknown:
        print(
            f"unknown bench(es): {', '.join(unknown)}; known: {', '.join(benches)}", file=sys.stderr
        )
        return 2
    for name in argv or list(discover(everything=False)):
        print(f"== bench.{name}", flush=True)
        started = time.perf_counter()
        benches[name]()
        print(f"== bench.{name} done in {time.perf_counter() - started:.1f} s\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
