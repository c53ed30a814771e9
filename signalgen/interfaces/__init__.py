"""Interfaces: what people and containers call. The HTTP API and dashboard
(`http`), the `signalgen` command (`cli`), the one-process dev runner (`dev`, `dev_reaper`),
container healthchecks (`probes`), `make screenshots` (`screenshots`), backtest reports.

The top layer: it may import every other layer; nothing below imports it
(tests/unit/test_layers.py).
"""
