"""`python -m bench hot_path` runs: both loops do their writes (each asserts its own: every
execution `succeeded`, every raw finish one row) on a scratch database, and the figures come
out. Not a timing test: the bench's goal is checked by running the bench."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_the_hot_path_bench_runs_both_loops(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.hot_path import BLOCK, bench_hot_path

    result = bench_hot_path(signals=2 * BLOCK)
    assert {"ours_cpu_ms", "raw_cpu_ms", "ours_wall_ms", "raw_wall_ms"} <= set(result)
    assert all(result[key] > 0 for key in ("ours_cpu_ms", "raw_cpu_ms", "cpu_ratio"))
    assert "ours / raw: CPU" in capsys.readouterr().out
