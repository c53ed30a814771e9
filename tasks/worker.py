"""`python -m tasks.worker [worker options]`: `celery -A tasks worker` without the CLI plugins.

The `celery` umbrella command imports every installed command plugin before it starts a worker
(Flower with Tornado and Prometheus, the click-repl shell with prompt_toolkit and Pygments), about
20 MB that a worker never uses. This entry point runs Celery's own `worker` command, with the same
options, on this app only. Use it where memory counts (containers, the embedded default); either
command runs the same worker.
"""

from __future__ import annotations

import sys

# Celery's CLI highlights `inspect` output with Pygments when it is installed; a worker never
# prints any. A None entry makes that optional import fail, as if Pygments were absent (~3 MB).
sys.modules.setdefault("pygments", None)  # type: ignore[arg-type]

from celery.bin.base import CLIContext  # noqa: E402
from celery.bin.worker import worker  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    from tasks import app

    worker.params.extend(app.user_options.get("worker", []))
    worker.main(
        args=list(sys.argv[1:] if argv is None else argv),
        prog_name="python -m tasks.worker",
        obj=CLIContext(app=app, no_color=False, workdir=None, quiet=False),
        auto_envvar_prefix="CELERY",
    )


if __name__ == "__main__":
    main()
