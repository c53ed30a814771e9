"""Market-data errors, sorted by what the caller should do next.

- `TransientProviderError` (429, timeouts, connection trouble, 5xx): retry with back-off.
- `PermanentProviderError`: this answer will not get better by asking again; log, count, move on.
  `EntitlementError` (the plan lacks the endpoint) and `ProviderDataError` (malformed answer)
  are its kinds.
"""

from __future__ import annotations


class MarketDataError(Exception):
    """Base of every market-data failure. `endpoint` names the provider endpoint, if any."""

    def __init__(self, message: str, *, endpoint: str | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint

    @property
    def reason(self) -> str:
        return str(self)


class TransientProviderError(MarketDataError):
    """Worth retrying after a pause: rate limited, timed out, unreachable, server error.

    `retryable` False: transient, but not worth retrying within this check (the circuit is
    open, or the check's time budget is spent); the next check tries again.
    """

    retryable = True

    def __init__(
        self, message: str, *, endpoint: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, endpoint=endpoint)
        self.retry_after = retry_after


class RateLimitedError(TransientProviderError):
    """HTTP 429 from the provider, or no slot from our own shared limiter in time."""


class CircuitOpenError(TransientProviderError):
    """The provider failed repeatedly (timeouts, refused connections, 5xx): calls are refused
    without a request until the breaker's cool-down ends. `retry_after` says when."""

    retryable = False


class DeadlineExceededError(TransientProviderError):
    """The check's time budget (MARKET_DATA_BUDGET_SECONDS) is spent: no further calls now."""

    retryable = False


class PermanentProviderError(MarketDataError):
    """Asking again will not help (for this answer, or until an operator acts)."""


class EntitlementError(PermanentProviderError):
    """The account's plan does not include this endpoint (HTTP 403). Never retried."""


class ProviderAuthError(PermanentProviderError):
    """The API key was refused (HTTP 401): a configuration problem."""


class ProviderDataError(PermanentProviderError):
    """The provider answered, but not in the documented shape (malformed JSON, missing fields)."""
