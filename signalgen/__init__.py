"""Service plumbing for the Signal Generator: settings, storage, market data, publishing, CLI."""
