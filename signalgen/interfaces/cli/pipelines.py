"""`signalgen pipelines add|list|show|enable|disable|remove|import|export`.

Pipelines are JSON (schemas.pipeline.PipelineSpec). Bad input is refused with one line per
problem naming the field (`pipelines[3].executor.url: ...`); an import is one transaction, so
a bad file writes nothing. Every write bumps the index version the dispatchers watch.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any, get_args

import click
from pydantic import ValidationError

from dispatcher.admission import Refused
from schemas.pipeline import PipelineSpec
from signalgen.interfaces.cli import storage
from signalgen.interfaces.cli.ops_options import written_path
from signalgen.interfaces.cli.output import print_items

#: `--trigger`'s values: the trigger modes of a `PipelineSpec`.
TRIGGER_MODES = click.Choice(get_args(PipelineSpec.model_fields["trigger_mode"].annotation))


def _pipeline_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a pipeline id (a UUID)", param_hint="PIPELINE_ID"
        ) from None


def _read_json(source: str) -> Any:
    """JSON from a file path, `-` (stdin), or inline text starting with { or [."""
    text = source
    if source == "-":
        text = sys.stdin.read()
    elif not source.lstrip().startswith(("{", "[")):
        path = Path(source)
        if not path.is_file():
            raise click.ClickException(f"{source}: no such file")
        text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.ClickException(
            f"{source if source != text else 'input'}: not valid JSON: {exc.msg} "
            f"(line {exc.lineno}, column {exc.colno})"
        ) from None


def _csv(value: str | None) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()] if value else []


@click.group()
def pipelines() -> None:
    """Trading pipelines: what wakes them (signals or a schedule) and what they run."""


@pipelines.command("add")
@click.option(
    "--json",
    "spec_json",
    metavar="JSON|FILE|-",
    help="The whole pipeline as JSON (other options then must not be given).",
)
@click.option(
    "--owner",
    metavar="USER",
    help="Owner: a user's name (`signalgen users list`); refused if users exist and this is "
    "not one of them.",
)
@click.option("--name", help="Pipeline name.")
@click.option("--trigger", "trigger_mode", type=TRIGGER_MODES, default="signal", show_default=True)
@click.option("--tickers", help="Scanner: comma-separated tickers (AAPL,MSFT).")
@click.option("--watchlist", is_flag=True, help="Scanner: the watchlist's tickers.")
@click.option("--types", help="Scanner: comma-separated signal types (default: any).")
@click.option("--bias", "biases", help="Scanner: comma-separated BULLISH,BEARISH,NEUTRAL.")
@click.option("--min-confidence", type=float, help="Scanner: minimum confidence 0..1.")
@click.option("--interval", "interval_seconds", type=int, help="Schedule: every N seconds.")
@click.option("--crontab", help="Schedule: 5-field crontab, UTC ('*/15 9-16 * * 1-5').")
@click.option(
    "--executor",
    "executor_kind",
    default="record",
    show_default=True,
    help="record, webhook or celery.",
)
@click.option("--url", help="Webhook: http(s) URL.")
@click.option("--secret", help="Webhook: HMAC secret (16+ characters).")
@click.option("--timeout", "timeout_seconds", type=float, help="Webhook: timeout in seconds.")
@click.option("--task", help="Celery executor: task name.")
@click.option("--queue", help="Celery executor: queue of the trading backend.")
@click.option("--disabled", is_flag=True, help="Create it disabled.")
def add(spec_json: str | None, disabled: bool, **options: Any) -> None:
    """Add one pipeline; prints its id."""
    from dispatcher.store import add_pipeline
    from schemas.pipeline import PipelineSpec, describe_errors

    if spec_json is not None:
        given = [
            k
            for k, v in options.items()
            if v not in (None, False) and k not in ("trigger_mode", "executor_kind")
        ]
        if given:
            raise click.UsageError(f"--json excludes --{given[0].replace('_', '-')}")
        data = _read_json(spec_json)
    else:
        data = _spec_from_options(options, disabled)
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise click.ClickException("invalid pipeline:\n" + describe_errors(exc)) from None
    database = storage.open_database(migrate=True)
    _check_owners(database, {spec.owner})
    try:
        pipeline_id = add_pipeline(database, spec)
    except Refused as exc:
        raise click.ClickException(f"pipeline refused: {exc}") from None
    click.echo(str(pipeline_id))


def unknown_owners(database: Any, owners: set[str]) -> tuple[list[str], bool]:
    """The owners among `owners` that are no user's name, and whether any user exists."""
    from sqlalchemy import func, select

    from signalgen.storage.models import User

    with database.session() as session:
        if not session.execute(select(func.count()).select_from(User)).scalar_one():
            return sorted(owners), False
        known = set(session.scalars(select(User.name).where(User.name.in_(owners))))
    return sorted(owners - known), True


def _check_owners(database: Any, owners: set[str]) -> None:
    """A pipeline's owner is a user (as the API requires of an admin creating for another
    user). With no user at all (a workstation that never made one), warn and go on."""
    unknown, users_exist = unknown_owners(database, owners)
    if not unknown:
        return
    names = ", ".join(repr(name) for name in unknown)
    if users_exist:
        raise click.ClickException(
            f"owner: no user named {names} (`signalgen users list`; add one with "
            f"`signalgen users add NAME`)"
        )
    click.echo(
        f"note: no users exist yet; owner {names} is not a user (add one with "
        "`signalgen users add NAME` to give it API access)",
        err=True,
    )


def _spec_from_options(options: dict[str, Any], disabled: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "owner": options["owner"],
        "name": options["name"],
        "trigger_mode": options["trigger_mode"],
        "enabled": not disabled,
    }
    scanner: dict[str, Any] = {}
    if options["tickers"]:
        scanner["tickers"] = _csv(options["tickers"])
    if options["watchlist"]:
        scanner["watchlist"] = True
    if options["types"]:
        scanner["signal_types"] = _csv(options["types"])
    if options["biases"]:
        scanner["biases"] = _csv(options["biases"])
    if options["min_confidence"] is not None:
        scanner["min_confidence"] = options["min_confidence"]
    if scanner:
        data["scanner"] = scanner
    schedule = {k: options[k] for k in ("interval_seconds", "crontab") if options[k] is not None}
    if schedule:
        data["schedule"] = schedule
    executor: dict[str, Any] = {"kind": options["executor_kind"]}
    for key in ("url", "secret", "timeout_seconds", "task", "queue"):
        if options[key] is not None:
            executor[key] = options[key]
    data["executor"] = executor
    return {k: v for k, v in data.items() if v is not None}


def _summary(row: Any) -> dict[str, Any]:
    trigger = (row.scanner or {}) if row.trigger_mode == "signal" else (row.schedule or {})
    return {
        "id": str(row.id),
        "owner": row.owner,
        "name": row.name,
        "enabled": row.enabled,
        "trigger_mode": row.trigger_mode,
        "trigger": trigger,
        "executor": row.executor,
    }


@pipelines.command("list")
@click.option("--owner")
@click.option("--trigger", "trigger_mode", type=TRIGGER_MODES)
@click.option("--enabled/--disabled", "enabled", default=None)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_(owner: str | None, trigger_mode: str | None, enabled: bool | None, as_json: bool) -> None:
    """List pipelines (secrets are never printed)."""
    from dispatcher.store import list_pipelines

    rows = list_pipelines(
        storage.open_database(migrate=False),
        owner=owner,
        trigger_mode=trigger_mode,
        enabled=enabled,
    )
    print_items([_summary(row) for row in rows], as_json, _summary_line, "pipeline")


def _summary_line(item: dict[str, Any]) -> str:
    state = "on " if item["enabled"] else "off"
    return (
        f"{item['id']}  {state}  {item['trigger_mode']:<8}  {item['executor']:<7}  "
        f"{item['owner']}/{item['name']}  {json.dumps(item['trigger'])}"
    )


@pipelines.command("show")
@click.argument("pipeline_id")
@click.option(
    "--executions",
    "limit",
    default=10,
    show_default=True,
    help="How many recent executions to show.",
)
def show(pipeline_id: str, limit: int) -> None:
    """One pipeline (webhook secret masked) and its recent executions."""
    from sqlalchemy import select

    from dispatcher.store import PipelineNotFound, get_pipeline
    from signalgen.storage.models import Execution

    database = storage.open_database(migrate=False)
    try:
        row = get_pipeline(database, _pipeline_id(pipeline_id))
    except PipelineNotFound:
        raise click.ClickException(f"no pipeline {pipeline_id}") from None
    data = _stored_view(row)
    with database.session() as session:
        executions = (
            session.execute(
                select(Execution)
                .where(Execution.pipeline_id == row.id)
                .order_by(Execution.claimed_at.desc())
                .limit(limit)
            )
            .scalars()
            .all()
        )
    data["created_at"] = row.created_at.isoformat()
    data["updated_at"] = row.updated_at.isoformat()
    data["recent_executions"] = [_execution_view(e) for e in executions]
    click.echo(json.dumps(data, indent=2))


def _stored_view(row: Any) -> dict[str, Any]:
    """The pipeline as stored (a `PipelineSpec`'s fields, as the columns of the same names
    hold them), its webhook secret masked: never decrypted to be shown."""
    executor = {"kind": row.executor, **(row.executor_config or {})}
    if "secret" in executor:
        executor["secret"] = "***"  # noqa: S105  (a mask, not a password)
    data = {name: getattr(row, name) for name in PipelineSpec.model_fields}
    data.update(id=str(row.id), executor=executor)
    return {key: value for key, value in data.items() if value is not None}


def _execution_view(execution: Any) -> dict[str, Any]:
    return {
        "id": execution.id,
        "key": execution.idempotency_key,
        "status": execution.status,
        "attempts": execution.attempts,
        "claimed_at": execution.claimed_at.isoformat() if execution.claimed_at else None,
        "started_at": execution.started_at.isoformat() if execution.started_at else None,
        "finished_at": execution.finished_at.isoformat() if execution.finished_at else None,
        "latency_ms": round(execution.latency_seconds * 1000, 1)
        if execution.latency_seconds is not None
        else None,
        "error": execution.error,
    }


def _set_enabled(pipeline_id: str, enabled: bool) -> None:
    from dispatcher.store import PipelineNotFound, set_enabled

    try:
        set_enabled(storage.open_database(migrate=True), _pipeline_id(pipeline_id), enabled)
    except PipelineNotFound:
        raise click.ClickException(f"no pipeline {pipeline_id}") from None
    click.echo(f"{pipeline_id} {'enabled' if enabled else 'disabled'}")


@pipelines.command("enable")
@click.argument("pipeline_id")
def enable(pipeline_id: str) -> None:
    """Enable a pipeline."""
    _set_enabled(pipeline_id, True)


@pipelines.command("disable")
@click.argument("pipeline_id")
def disable(pipeline_id: str) -> None:
    """Disable a pipeline (queued executions of it are skipped)."""
    _set_enabled(pipeline_id, False)


@pipelines.command("remove")
@click.argument("pipeline_id")
@click.option("--yes", is_flag=True, help="Do not ask.")
def remove(pipeline_id: str, yes: bool) -> None:
    """Remove a pipeline and its execution history."""
    from dispatcher.store import PipelineNotFound, remove_pipeline

    parsed = _pipeline_id(pipeline_id)
    if not yes:
        click.confirm(f"remove pipeline {pipeline_id} and its executions?", abort=True)
    try:
        remove_pipeline(storage.open_database(migrate=True), parsed)
    except PipelineNotFound:
        raise click.ClickException(f"no pipeline {pipeline_id}") from None
    click.echo(f"{pipeline_id} removed")


@pipelines.command("import")
@click.argument("source", metavar="FILE|-")
@click.option("--dry-run", is_flag=True, help="Validate only.")
def import_(source: str, dry_run: bool) -> None:
    """Import a JSON list of pipelines (as `export` writes it), all or nothing. Items with an
    `id` that exists are updated; others are created. A webhook executor given without its
    `secret` keeps the secret stored for that id (an export leaves secrets out)."""
    from dispatcher.store import InvalidImport, import_specs, parse_import
    from signalgen.crypto import SecretKeyError

    database = storage.open_database(migrate=True)
    try:
        data = _with_stored_secrets(database, _read_json(source))
        specs = parse_import(data)
    except InvalidImport as exc:
        raise click.ClickException(f"{source}: nothing imported:\n{exc}") from None
    except SecretKeyError as exc:
        raise click.ClickException(f"{source}: nothing imported: {exc}") from None
    _check_owners(database, {spec.owner for spec in specs})
    if dry_run:
        click.echo(f"{len(specs)} pipeline(s) valid; nothing written (--dry-run)")
        return
    try:
        created, updated = import_specs(database, specs)
    except Refused as exc:
        raise click.ClickException(f"{source}: nothing imported: {exc}") from None
    click.echo(f"imported {len(specs)} pipeline(s): {created} created, {updated} updated")


def _with_stored_secrets(database: Any, data: Any) -> Any:
    """`data` with each webhook executor that has no `secret` given the one stored for its
    pipeline `id` (same kind), decrypted. Anything else is left for `parse_import` to judge."""
    items = data["pipelines"] if isinstance(data, dict) and set(data) == {"pipelines"} else data
    if not isinstance(items, list):
        return data
    wanted: dict[uuid.UUID, dict[str, Any]] = {}
    for item in items:
        executor = item.get("executor") if isinstance(item, dict) else None
        if (
            isinstance(executor, dict)
            and executor.get("kind") == "webhook"
            and "secret" not in executor
            and isinstance(item.get("id"), str)
        ):
            try:
                wanted[uuid.UUID(item["id"])] = executor
            except ValueError:
                continue  # parse_import names the bad id
    if not wanted:
        return data
    from sqlalchemy import select

    from signalgen.crypto import default_box
    from signalgen.storage.models import Pipeline

    with database.session() as session:
        rows = session.execute(
            select(Pipeline.id, Pipeline.executor, Pipeline.executor_config).where(
                Pipeline.id.in_(list(wanted))
            )
        ).all()
    for pipeline_id, kind, config in rows:
        if kind == "webhook" and "secret" in (config or {}):
            wanted[pipeline_id]["secret"] = default_box().open_config(config)["secret"]
    return data


@pipelines.command("export")
@click.option("--owner")
@written_path("--output", "-o", help="File to write (default: stdout).")
@click.option(
    "--include-secrets",
    is_flag=True,
    help="Write webhook secrets in plain text (decrypted); keep the file safe.",
)
def export(owner: str | None, output: Path | None, include_secrets: bool) -> None:
    """Export pipelines as JSON, importable as is. Webhook secrets are left out unless
    --include-secrets: importing the file back keeps each existing pipeline's stored secret;
    a pipeline recreated elsewhere needs --include-secrets (or its secret added by hand)."""
    from dispatcher.store import export_dict, list_pipelines, row_to_spec
    from signalgen.crypto import SecretKeyError

    rows = list_pipelines(storage.open_database(migrate=False), owner=owner)
    try:
        items = [export_dict(row_to_spec(row), include_secrets=include_secrets) for row in rows]
    except SecretKeyError as exc:
        raise click.ClickException(f"nothing exported: {exc}") from None
    omitted = 0 if include_secrets else sum("secret" in (row.executor_config or {}) for row in rows)
    text = json.dumps(items, indent=2)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
        click.echo(f"{len(rows)} pipeline(s) written to {output}", err=True)
    else:
        click.echo(text)
    if omitted:
        click.echo(
            f"{omitted} webhook secret(s) left out (--include-secrets to write them)", err=True
        )
