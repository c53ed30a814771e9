"""Process start-up (worker, beat, the schema check): a connection or configuration failure ends
the process with one line (what failed, the masked URL, what to try), not a traceback.
`LOG_LEVEL=DEBUG` keeps the traceback."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from signalgen.failures import current_endpoints, describe

if TYPE_CHECKING:
    from signalgen.settings import Settings

TRACEBACK_HINT = "LOG_LEVEL=DEBUG shows the traceback"


def verbose() -> bool:
    return os.environ.get("LOG_LEVEL", "").strip().upper() == "DEBUG"


def failure_line(exc: BaseException) -> str | None:
    """The one line for `exc` if it is a recognised failure and tracebacks are not wanted."""
    if verbose():
        return None
    failure = describe(exc, current_endpoints())
    return None if failure is None else f"{failure.line} ({TRACEBACK_HINT})"


def ensure_schema_main() -> None:
    """`python -c 'from signalgen.startup import ensure_schema_main; ensure_schema_main()'`:
    create or migrate the schema; a failure is one line on stderr and exit code 1 or 2."""
    try:
        from signalgen.storage import get_database
        from signalgen.storage.engine import ensure_schema

        ensure_schema(get_database())
    except Exception as exc:
        failure = None if verbose() else describe(exc, current_endpoints())
        if failure is None:
            raise
        print(f"{failure.line} ({TRACEBACK_HINT})", file=sys.stderr)
        sys.exit(failure.exit_code)


def configuration_problem(settings: Settings) -> str | None:
    """What is wrong with the configuration files a running service reads (the watchlist and
    the generators file), as the file and field at fault; None when both load. Cheap enough
    for a readiness probe (two small JSON files, no generator built)."""
    from schemas.config import GeneratorsConfig
    from signalgen.config import ConfigError, load_json_model, load_watchlist

    try:
        load_watchlist(settings.watchlist_config_path)
        load_json_model(settings.generators_config_path, GeneratorsConfig)
    except ConfigError as exc:
        return str(exc)
    return None
