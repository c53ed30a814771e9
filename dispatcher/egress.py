"""Outbound policy for executors: which addresses a webhook may reach, which Celery tasks and
queues a pipeline may send to. Used when a pipeline is saved (`check_executor`, through
`dispatcher.admission`) and again at delivery (`dispatcher.executors`, `dispatcher.egress_http`).

Webhooks. A user's webhook URL must not turn our workers into a scanner of the internal
network. A destination is refused when any address its host resolves to is loopback, private
(RFC 1918, IPv6 unique local), link-local, multicast, unspecified, reserved or broadcast, shared
(CGNAT), benchmarking, documentation, a cloud metadata address, or an IPv6 form embedding such an
IPv4 address (IPv4-mapped, NAT64, 6to4, Teredo). Hosts written as numbers (`2130706433`,
`0x7f.1`, `0177.0.0.1`, `127.1`) are read the way `inet_aton` and URL parsers read them, and are
also resolved. The operator allows networks explicitly with `WEBHOOK_ALLOW_NETWORKS` (CIDRs); a
metadata address is allowed only by an allowance naming exactly it (a /32 or /128), never by a
broader network. The check is repeated at delivery on the addresses actually connected to, so a
name that resolved to a public address when saved and to an internal one later (DNS rebinding)
is refused then.

Celery. Only tasks on the operator's allowlist (`executors.celery_tasks` in
`config/operations.json`), each to one of its listed queues; this service's own tasks
(`signals.*`, `pipelines.*`, `celery.*`) and queues never.

The classification is pure (`classify`, `EgressPolicy.refusal`, `parse_host_literal`,
`check_celery`); resolving is the one edge (`system_resolver`, injectable as `resolve`).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dispatcher.admission import Refused
from signalgen.config.operations import RESERVED_QUEUES, RESERVED_TASK_PREFIXES, ExecutorPolicy
from signalgen.networks import ALLOW_SETTING as ALLOW_SETTING
from signalgen.networks import IPNetwork as IPNetwork
from signalgen.networks import parse_networks as parse_networks

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: (host, port) -> the addresses it resolves to, as text (getaddrinfo's answer).
Resolver = Callable[[str, int], Sequence[str]]

#: What a delivery refused by this policy stores as its error: the same text whatever the
#: address and whether or not anything listens there.
DELIVERY_REFUSED = "destination not allowed by egress policy"

_RESERVED_QUEUE_PREFIXES = ("signals.", "pipelines.", "celery", "amq.")

_METADATA = "a cloud metadata address"
#: Instance metadata services (AWS/GCP/Azure/OpenStack, AWS IPv6, ECS tasks, Alibaba).
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(text)
    for text in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "100.100.100.200")
)


def _table(rows: Sequence[tuple[str, str]]) -> tuple[tuple[IPNetwork, str], ...]:
    return tuple((ipaddress.ip_network(cidr), kind) for cidr, kind in rows)


# First match wins: the narrower networks come before the ones containing them.
_IPV4_REFUSED = _table(
    [
        ("255.255.255.255/32", "a broadcast address"),
        ("0.0.0.0/8", "an unspecified ('this network') address"),
        ("10.0.0.0/8", "a private address (RFC 1918)"),
        ("100.64.0.0/10", "a shared (carrier-grade NAT) address"),
        ("127.0.0.0/8", "a loopback address"),
        ("169.254.0.0/16", "a link-local address"),
        ("172.16.0.0/12", "a private address (RFC 1918)"),
        ("192.0.0.0/24", "a reserved (IETF protocol assignments) address"),
        ("192.0.2.0/24", "a documentation address"),
        ("192.88.99.0/24", "a reserved (6to4 relay) address"),
        ("192.168.0.0/16", "a private address (RFC 1918)"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),
    ]
)
_IPV6_REFUSED = _table(
    [
        ("::/128", "an unspecified address"),
        ("::1/128", "a loopback address"),
        ("64:ff9b:1::/48", "a private (local-use NAT64) address"),
        ("100::/64", "a reserved (discard-only) address"),
        ("2001::/32", "a Teredo address"),
        ("2001:2::/48", "a benchmarking address"),
        ("2001::/23", "a reserved (IETF protocol assignments) address"),
        ("2001:db8::/32", "a documentation address"),
        ("3fff::/20", "a documentation address"),
        ("fc00::/7", "a unique local (private) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local (private) address"),
        ("ff00::/8", "a multicast address"),
    ]
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")


class EgressRefused(Exception):
    """A destination the policy refuses. Deliberately not an OSError: the HTTP stack must not
    treat it as a transport error it could retry or wrap."""

    def __init__(self, address: IPAddress, reason: str) -> None:
        super().__init__(f"{address} is {reason}")
        self.address = address
        self.reason = reason


# -- pure ---------------------------------------------------------------------------------------


def parse_host_literal(host: str) -> IPAddress | None:
    """The address a host written as an IP literal means, or None for a name.

    IPv6 with or without brackets (a zone id is dropped); IPv4 in every form `inet_aton` and
    WHATWG URL parsers accept: 1 to 4 parts, each decimal, octal (leading 0) or hex (0x), the
    last part filling the remaining bytes (`127.1`, `0x7f.1`, `0177.0.0.1`, `2130706433`), one
    trailing dot allowed.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            return None
    if text.endswith("."):
        text = text[:-1]
    parts = text.split(".")
    if not text or len(parts) > 4:
        return None
    numbers: list[int] = []
    for part in parts:
        number = _ipv4_part(part)
        if number is None:
            return None
        numbers.append(number)
    *leading, last = numbers
    if any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for index, number in enumerate(leading):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)


def _ipv4_part(part: str) -> int | None:
    lowered = part.lower()
    if lowered.startswith("0x"):
        digits, base = lowered[2:], 16
        if digits == "":
            return 0
    elif len(lowered) > 1 and lowered.startswith("0"):
        digits, base = lowered[1:], 8
    else:
        digits, base = lowered, 10
    allowed = "0123456789abcdef"[:base]
    if not digits or any(c not in allowed for c in digits):
        return None
    return int(digits, base)


def unmapped(address: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is that IPv4 address on the wire."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        return ipaddress.IPv6Address(address.packed)  # drop a zone id
    return address


def classify(address: IPAddress) -> str | None:
    """Why `address` is not a public destination (`"a loopback address"`), or None."""
    address = unmapped(address)
    if address in METADATA_ADDRESSES:
        return _METADATA
    if isinstance(address, ipaddress.IPv4Address):
        return _first_match(address, _IPV4_REFUSED)
    if address in _NAT64:
        return _embedding("a NAT64 address", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    embedded: str | None = None
    if address.sixtofour is not None:
        embedded = _embedding("a 6to4 address", address.sixtofour)
    elif address.teredo is not None:  # refused by the table below when nothing embedded is
        server, client = address.teredo
        embedded = _embedding("a Teredo address", client) or _embedding("a Teredo address", server)
    if embedded is not None:
        return embedded
    kind = _first_match(address, _IPV6_REFUSED)
    if kind is None and address not in _GLOBAL_UNICAST_V6:
        return "a reserved address"
    return kind


def _first_match(address: IPAddress, table: tuple[tuple[IPNetwork, str], ...]) -> str | None:
    for network, kind in table:
        if address in network:
            return kind
    return None


def _embedding(form: str, embedded: ipaddress.IPv4Address) -> str | None:
    inner = classify(embedded)
    return None if inner is None else f"{form} embedding {embedded}, {inner}"


@dataclass(frozen=True)
class EgressPolicy:
    """Which addresses a webhook may reach: public ones, plus the operator's `allow` networks.
    `resolve` is the resolver used at save time and delivery (getaddrinfo unless injected)."""

    allow: tuple[IPNetwork, ...] = ()
    resolve: Resolver | None = None

    def refusal(self, address: IPAddress) -> str | None:
        """Why the policy refuses `address` (`"a loopback address"`), or None when allowed."""
        address = unmapped(address)
        kind = classify(address)
        if kind is None:
            return None
        if kind == _METADATA:  # only an allowance naming exactly this address
            exact = (n for n in self.allow if n.num_addresses == 1)
            return None if any(address in n for n in exact) else kind
        if any(address in n for n in self.allow if n.version == address.version):
            return None
        return kind

    def addresses(self, host: str, port: int) -> list[IPAddress]:
        """Every address `host` resolves to (OSError, e.g. socket.gaierror, when none)."""
        resolve = self.resolve or system_resolver
        found: list[IPAddress] = []
        for text in resolve(host, port):
            address = ipaddress.ip_address(text.split("%", 1)[0])
            if address not in found:
                found.append(address)
        if not found:
            raise socket.gaierror(socket.EAI_NONAME, "no address")
        return found

    def vet(self, host: str, port: int) -> list[IPAddress]:
        """The addresses to connect to for `host`: EgressRefused when the literal or ANY
        resolved address is refused (one refused answer is enough to distrust the name)."""
        literal = parse_host_literal(host)
        if literal is not None:
            self.check(literal)
        found = self.addresses(host, port)
        for address in found:
            self.check(address)
        return found

    def check(self, address: IPAddress) -> None:
        reason = self.refusal(address)
        if reason is not None:
            raise EgressRefused(address, reason)


def check_url(url: str, policy: EgressPolicy, *, field: str = "executor.url") -> None:
    """Refused(field, reason) unless every address of `url`'s host is allowed by `policy`.
    A host that does not resolve is refused too: a typo should fail now, not at delivery."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise Refused(field, f"only http:// and https:// URLs are allowed, not {parts.scheme}://")
    host = parts.hostname
    if not host:
        raise Refused(field, "the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise Refused(field, f"invalid port: {exc}") from None
    hint = f"not allowed ({ALLOW_SETTING})"
    literal = parse_host_literal(host)
    if literal is not None:
        reason = policy.refusal(literal)
        if reason is not None:
            shown = str(literal) if str(literal) == host else f"{host} ({literal})"
            raise Refused(field, f"{shown} is {reason}; {hint}")
    try:
        found = policy.addresses(host, port)
    except (OSError, UnicodeError, ValueError):
        raise Refused(field, f"host {host!r} does not resolve") from None
    for address in found:
        reason = policy.refusal(address)
        if reason is not None:
            raise Refused(field, f"{host} resolves to {address}, {reason}; {hint}")


def is_reserved_queue(queue: str) -> bool:
    return queue in RESERVED_QUEUES or queue.startswith(_RESERVED_QUEUE_PREFIXES)


def check_celery(task: str, queue: str, policy: ExecutorPolicy) -> None:
    """Refused("executor.task" | "executor.queue", reason) unless the operator's allowlist has
    `task` with `queue`; this service's own tasks and queues never."""
    if task.startswith(RESERVED_TASK_PREFIXES):
        raise Refused(
            "executor.task", f"{task!r} is one of this service's own tasks; never allowed"
        )
    if is_reserved_queue(queue):
        raise Refused(
            "executor.queue", f"{queue!r} is one of this service's own queues; never allowed"
        )
    target = policy.celery_target(task)
    if target is None:
        raise Refused(
            "executor.task",
            f"task {task!r} is not on the operator's allowlist "
            "(executors.celery_tasks in operations.json)",
        )
    if queue not in target.queues:
        raise Refused(
            "executor.queue",
            f"queue {queue!r} is not allowed for task {task!r} "
            f"(allowed: {', '.join(target.queues)})",
        )


# -- edges --------------------------------------------------------------------------------------


def system_resolver(host: str, port: int) -> list[str]:
    """getaddrinfo, as the HTTP client would call it (TCP; IPv4 and IPv6)."""
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@functools.lru_cache(maxsize=8)
def _networks(text: str) -> tuple[IPNetwork, ...]:
    return parse_networks(text)


def current_policy(resolve: Resolver | None = None) -> EgressPolicy:
    """The policy this process's settings give (`WEBHOOK_ALLOW_NETWORKS`)."""
    from signalgen.settings import get_settings

    return EgressPolicy(allow=_networks(get_settings().webhook_allow_networks), resolve=resolve)


def current_executor_policy() -> ExecutorPolicy:
    from signalgen.config.operations import get_operations_config

    return get_operations_config().executors


def check_executor(
    executor: Any,
    *,
    policy: EgressPolicy | None = None,
    executors: ExecutorPolicy | None = None,
) -> None:
    """Refused unless the executor reaches only what the operator allows."""
    from schemas.pipeline import CeleryExecutor, WebhookExecutor

    if isinstance(executor, WebhookExecutor):
        check_url(str(executor.url), policy or current_policy())
    elif isinstance(executor, CeleryExecutor):
        check_celery(executor.task, executor.queue, executors or current_executor_policy())
