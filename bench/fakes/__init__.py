"""Local fake provider servers (Finnhub, history providers) for benchmarks and tests."""
