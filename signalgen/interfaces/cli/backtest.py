"""`signalgen backtest`: replay a CSV of daily bars through a generator, print what it would emit.

GENERATOR is a registry type (`golden_cross`: its default settings) or an instance name from
config/generators.json (its configured settings and its name as `source`). `--set key=value`
overrides one setting; the value is read as JSON (`--set sma_short=20`, `--set seed=null`) and
taken as a plain string when it is not JSON (`--set timeframe=D`). `--report DIR` writes a chart
(signals by bias, thinned when dense) and a Markdown event study:
`signalgen.interfaces.backtest_report`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import numpy as np
from pydantic import ValidationError

from generators import Bars, BaseSignalGenerator, default_registry
from schemas.signal import validate_ticker
from signalgen.interfaces.cli.ops_options import written_path


def read_bars_csv(path: Path, ticker: str) -> Bars:
    """One ticker's daily bars from a `date,open,high,low,close,volume` CSV.

    Parsed and checked by the same reader as `signalgen bars import`, so a file the backtest
    accepts is one the store accepts; errors name the line and the column.
    """
    from signalgen.marketdata.csv_import import CsvImportError
    from signalgen.marketdata.csv_import import read_bars_csv as parse_bars_csv

    try:
        rows = parse_bars_csv(path).rows
    except CsvImportError as exc:
        raise click.ClickException(str(exc)) from None
    dates = np.array([row.day for row in rows], dtype="datetime64[D]")
    table = np.array(
        [[row.open, row.high, row.low, row.close, row.volume] for row in rows], dtype=np.float64
    ).T
    return Bars(
        tickers=(ticker,),
        dates=dates,
        open=table[0:1],
        high=table[1:2],
        low=table[2:3],
        close=table[3:4],
        volume=table[4:5],
    )


def parse_overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`key=value` pairs into settings; values parsed as JSON, else kept as strings."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="--set")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides


def build_generator(name: str, overrides: dict[str, Any], ticker: str) -> BaseSignalGenerator[Any]:
    """The generator a backtest runs: a registry type with defaults, or a configured instance."""
    registry = default_registry()
    if name in registry:
        cls, settings, source = registry.get(name), {}, name
    else:
        from schemas.config import GeneratorsConfig
        from signalgen.config import ConfigError, load_json_model
        from signalgen.settings import Settings

        path = Settings().generators_config_path
        try:
            instances = load_json_model(path, GeneratorsConfig).generators
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        if name not in instances:
            raise click.BadParameter(
                f"{name!r} is neither a generator type ({', '.join(registry.names())}) nor an "
                f"instance in {path} ({', '.join(sorted(instances)) or 'none'})",
                param_hint="GENERATOR",
            )
        entry = instances[name]
        try:
            cls = registry.get(entry.type)
        except ValueError as exc:
            raise click.ClickException(f"{path}: generators.{name}.type: {exc}") from None
        settings, source = dict(entry.settings), name
    fields = cls.config_model.model_fields
    for key in overrides:
        if key == "tickers":
            raise click.BadParameter(
                "the backtest's ticker is set by --ticker", param_hint="--set tickers"
            )
        if key not in fields:
            known = ", ".join(k for k in fields if k != "tickers")
            raise click.BadParameter(
                f"unknown setting {key!r} for {cls.name} (known: {known})",
                param_hint=f"--set {key}",
            )
    settings.update(overrides)
    settings.pop("tickers", None)
    try:
        config = cls.config_model.model_validate(settings)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or 'settings'}: {item['msg']}"
            for item in exc.errors()
        )
        raise click.BadParameter(problems, param_hint="--set") from None
    return cls(config, source=source, tickers=(ticker,))


@contextlib.contextmanager
def _quiet_generators(verbose: bool) -> Iterator[None]:
    """Early days of a replay lack history; their warnings are noise unless asked for."""
    target = logging.getLogger("generators")
    previous = target.level
    if not verbose:
        target.setLevel(logging.ERROR)
    try:
        yield
    finally:
        target.setLevel(previous)


def _ticker_from_path(path: Path) -> str:
    return path.stem.split("_")[0].upper()


def _require_matplotlib() -> None:
    """A one-line error naming the extra when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "--plot and --report need matplotlib: pip install 'signal-generator[plot]'"
        ) from None


@click.command("backtest")
@click.argument("generator_name", metavar="GENERATOR")
@click.option(
    "--bars",
    "bars_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CSV with columns date,open,high,low,close,volume.",
)
@click.option("--ticker", help="Ticker of the bars (default: the file name up to its first _).")
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a generator setting (value read as JSON). Repeatable.",
)
@written_path(
    "--plot",
    "plot_path",
    help="Write a PNG: close, SMAs, signals by bias (thinned when dense), event study.",
)
@written_path(
    "--report",
    "report_dir",
    folder=True,
    help="Write TICKER_SOURCE.png and TICKER_SOURCE.md (event-study table) into this directory.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the event study's random-date baseline and bootstrap intervals.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show the generator's log events.")
def backtest(
    generator_name: str,
    bars_path: Path,
    ticker: str | None,
    sets: tuple[str, ...],
    plot_path: Path | None,
    report_dir: Path | None,
    seed: int,
    verbose: bool,
) -> None:
    """Replay daily bars one day at a time; print each distinct signal as one JSON line."""
    from generators.backtest import walk_forward

    ticker = ticker or _ticker_from_path(bars_path)
    try:
        validate_ticker(ticker)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ticker") from None
    generator = build_generator(generator_name, parse_overrides(sets), ticker)
    if generator.inputs not in ("bars", "none"):
        raise click.UsageError(
            f"generator {generator_name!r} computes on {generator.inputs}, not on daily bars: "
            "a bars backtest cannot replay it"
        )
    bars = read_bars_csv(bars_path, ticker)
    with _quiet_generators(verbose):
        signals = walk_forward(generator, bars)
    for signal in signals:
        click.echo(signal.to_json())
    click.echo(
        f"{len(signals)} signal(s) from {generator.source} over {bars.n_bars} bars of "
        f"{ticker} ({bars.day(0)} to {bars.day(bars.n_bars - 1)})",
        err=True,
    )
    if plot_path is None and report_dir is None:
        return
    _require_matplotlib()
    from signalgen.interfaces.backtest_report import save_chart, study_backtest, write_report

    result = study_backtest(bars, signals, generator, seed=seed)
    if plot_path is not None:
        save_chart(result, plot_path)
        click.echo(f"plot written to {plot_path}", err=True)
    if report_dir is not None:
        chart, report = write_report(result, report_dir, bars_name=bars_path.name)
        click.echo(f"report written to {report} (chart {chart})", err=True)
