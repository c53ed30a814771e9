"""`signalgen api`: serve the HTTP service (health, API, webhook ingress) with uvicorn."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from signalgen.interfaces.cli.ops_options import written_path

#: Where the OpenAPI document is kept in the repository (a test checks it is current).
OPENAPI_PATH = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"


def openapi_document() -> dict[str, Any]:
    from signalgen.interfaces.http.app import create_app

    return create_app().openapi()


def write_openapi(path: Path = OPENAPI_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n")


def serve(host: str, port: int, *, log_level: str = "info") -> None:
    """Check the configuration and the schema, then serve `create_app()` until interrupted.
    A broken watchlist or generators file stops start-up (ConfigError: file and field)."""
    import uvicorn

    from signalgen.config import ConfigError
    from signalgen.interfaces.cli import storage
    from signalgen.interfaces.http.app import create_app
    from signalgen.settings import get_settings
    from signalgen.startup import configuration_problem

    problem = configuration_problem(get_settings())
    if problem is not None:
        raise ConfigError(problem)
    database = storage.open_database(migrate=True)
    uvicorn.run(create_app(database=database), host=host, port=port, log_level=log_level)


@click.command("api")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
@written_path(
    "--openapi",
    "openapi_path",
    help="Write the OpenAPI document to this file (e.g. docs/openapi.json) and exit.",
)
def api(host: str, port: int, log_level: str, openapi_path: Path | None) -> None:
    """Serve the HTTP API (/api/v1, /healthz, /readyz, /docs) on HOST:PORT."""
    if openapi_path is not None:
        write_openapi(openapi_path)
        click.echo(f"wrote {openapi_path}")
        return
    serve(host, port, log_level=log_level)
