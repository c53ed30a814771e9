"""Network lists in settings (`WEBHOOK_ALLOW_NETWORKS`): parsed here, below the settings that
validate them and the dispatcher's egress policy that applies them (dispatcher/egress.py)."""

from __future__ import annotations

import ipaddress

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_SETTING = "WEBHOOK_ALLOW_NETWORKS"


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """`"127.0.0.1/32, ::1/128"` -> networks. ValueError naming the entry and the setting."""
    networks: list[IPNetwork] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=True))
        except ValueError as exc:
            raise ValueError(
                f"{ALLOW_SETTING}: {entry!r} is not a network in CIDR form: {exc}"
            ) from None
    return tuple(networks)
