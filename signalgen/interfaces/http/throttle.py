"""Throttling failed authentication: who is counted, under which Redis keys. Pure (no I/O);
`signalgen.interfaces.http.deps` reads and writes the counters.

Failures are counted per fixed window (`window` seconds) under two names at once: the client's
address (an IPv6 client by its /64, which one host usually holds whole) and the credential's
own bucket (an API key's first characters, `ApiKey.prefix`; a webhook's source name). Past the
limit of either, the next attempt is refused with 429 and `Retry-After` (the window's end)
before anything costly (the database lookup) is done.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from dataclasses import dataclass

FAIL_KEY_PREFIX = "signalgen:auth:fail:"
GOOD_KEY_PREFIX = "signalgen:auth:good:"
#: How long a key that authenticated once passes a throttle (see `deps.current_principal`).
GOOD_KEY_SECONDS = 86_400
#: The characters of a presented API key that name its bucket: `ApiKey.prefix`'s length.
KEY_PREFIX_LENGTH = 10

_PLAIN = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


def address_bucket(host: str | None) -> str:
    """The client's bucket: an IPv4 address as is, an IPv6 address by its /64 (an IPv4-mapped
    one as the IPv4), anything else (a Unix socket, a test client) by its name."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return _plain(host)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def key_bucket(key: str) -> str:
    """The bucket of a presented API key: its first `KEY_PREFIX_LENGTH` characters."""
    return _plain(key[:KEY_PREFIX_LENGTH])


def _plain(text: str) -> str:
    """`text` when it is short and plain, else a hash of it (a Redis key stays readable and
    bounded, whatever a client sends)."""
    if _PLAIN.match(text):
        return text
    data = text.encode("utf-8", "surrogatepass")
    return "h-" + hashlib.sha256(data).hexdigest()[:24]


@dataclass(frozen=True)
class FailureWindow:
    """Counters of one scope (`api`, `webhook`) for the window holding `now`."""

    scope: str
    window: int
    now: float

    @property
    def slot(self) -> int:
        return int(self.now // self.window)

    def key(self, kind: str, bucket: str) -> str:
        return f"{FAIL_KEY_PREFIX}{self.scope}:{kind}:{bucket}:{self.slot}"

    @property
    def retry_after(self) -> int:
        """Whole seconds until this window has ended (rounded up, at least 1)."""
        return max(math.ceil((self.slot + 1) * self.window - self.now), 1)


def over_limit(counts: list[int | None], limits: list[int]) -> bool:
    """Whether any counter has reached its limit (a limit of 0 turns its check off)."""
    return any(
        limit > 0 and (count or 0) >= limit for count, limit in zip(counts, limits, strict=True)
    )
