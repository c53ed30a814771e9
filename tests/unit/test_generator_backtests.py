"""`signalgen backtest NAME --bars FILE.csv` for the bar-driven generators of the family."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from generators.backtest import walk_forward
from signalgen.interfaces.cli import main
from signalgen.interfaces.cli.backtest import build_generator, read_bars_csv
from tests.support.market import MARKET_DIR


@pytest.mark.parametrize(
    ("name", "sets"),
    [
        ("death_cross", []),
        ("volatility_breakout", ["--set", "multiplier=3"]),
        ("price_level", ["--set", 'levels={"SPY": [100, 150, 200]}', "--set", "channel_window=50"]),
    ],
)
def test_backtest_command_prints_each_distinct_signal(name: str, sets: list[str]) -> None:
    path = MARKET_DIR / "spy_2008_2017.csv"
    result = CliRunner().invoke(main, ["backtest", name, "--bars", str(path), *sets])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    overrides = {k: json.loads(v) for k, _, v in (s.partition("=") for s in sets[1::2])}
    expected = walk_forward(build_generator(name, overrides, "SPY"), read_bars_csv(path, "SPY"))
    assert lines and [line["signal_id"] for line in lines] == [str(s.signal_id) for s in expected]
    assert len({line["signal_id"] for line in lines}) == len(lines)
