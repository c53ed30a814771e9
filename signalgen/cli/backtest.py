"""`signalgen backtest`: replay a CSV of daily bars through a generator, print what it would emit.

GENERATOR is a registry type (`golden_cross`: its default settings) or an instance name from
config/generators.json (its configured settings and its name as `source`). `--set key=value`
overrides one setting; the value is read as JSON (`--set sma_short=20`, `--set seed=null`) and
taken as a plain string when it is not JSON (`--set timeframe=D`).
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
from schemas.signal import Signal, validate_ticker


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


def plot_backtest(
    path: Path, bars: Bars, signals: list[Signal], generator: BaseSignalGenerator[Any]
) -> None:
    """Close, both SMAs (when the generator has them) and a marker on each signal's bar."""
    try:
        import matplotlib
    except ImportError:
        raise click.ClickException(
            "--plot needs matplotlib: pip install 'signal-generator[plot]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from generators.indicators import sma

    days = bars.dates.astype("datetime64[D]")
    close = bars.close[0]
    figure, axes = plt.subplots(figsize=(12, 6))
    axes.plot(days, close, color="0.45", linewidth=0.8, label="close")
    for attribute, color in (("sma_short", "tab:orange"), ("sma_long", "tab:blue")):
        window = getattr(generator.config, attribute, None)
        if isinstance(window, int):
            axes.plot(
                days, sma(bars.close, window)[0], color=color, linewidth=1.2, label=f"SMA {window}"
            )
    index = {day: i for i, day in enumerate(days.tolist())}
    marks = [index[s.event_time.date()] for s in signals if s.event_time.date() in index]
    if marks:
        axes.scatter(
            days[marks],
            close[marks],
            marker="^",
            color="tab:green",
            s=80,
            zorder=3,
            label=f"{generator.name} ({len(marks)})",
        )
    axes.set_title(f"{bars.tickers[0]}: {generator.source} backtest")
    axes.legend(loc="upper left")
    axes.grid(alpha=0.3)
    figure.autofmt_xdate()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


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
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a PNG of close, SMAs and signals.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show the generator's log events.")
def backtest(
    generator_name: str,
    bars_path: Path,
    ticker: str | None,
    sets: tuple[str, ...],
    plot_path: Path | None,
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
    if plot_path is not None:
        plot_backtest(plot_path, bars, signals, generator)
        click.echo(f"plot written to {plot_path}", err=True)
