"""An HTTP session that connects only where `dispatcher.egress` allows, checked at connect time.

The URL's host is resolved once per connection, every answer is checked against the policy
(one refused answer refuses the host), and the socket connects to a vetted address, not to a
name the HTTP stack would resolve again (which a rebinding DNS server could answer differently).
After connecting, the peer address the kernel reports is checked again. TLS still uses the URL's
host name for SNI and certificate verification: only the TCP connect is pinned.

A refusal raises `egress.EgressRefused` out of `session.post` (it is not an OSError, so urllib3
neither retries nor wraps it). Proxies are never used: `trust_env` is off and a proxied request
is refused.
"""

from __future__ import annotations

import socket
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from dispatcher.egress import EgressPolicy, EgressRefused, parse_host_literal


def open_vetted_socket(
    policy: EgressPolicy,
    host: str,
    port: int,
    *,
    timeout: Any = None,
    source_address: tuple[str, int] | None = None,
    socket_options: Any = None,
) -> socket.socket:
    """A TCP socket connected to an address of `host` the policy allows, the peer re-checked.
    EgressRefused when the policy refuses; OSError (socket.gaierror, timeout) as connect does."""
    candidates = policy.vet(host.strip("[]"), port)
    error: OSError | None = None
    for address in candidates:
        family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            if isinstance(timeout, int | float):
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect((str(address), port))
            peer = parse_host_literal(str(sock.getpeername()[0]))
            if peer is None:
                raise EgressRefused(address, "not an IP peer")
            policy.check(peer)  # the address actually connected to
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    assert error is not None  # vet() returns at least one address
    raise error


def _new_conn(connection: HTTPConnection, policy: EgressPolicy) -> socket.socket:
    """urllib3's `HTTPConnection._new_conn`, with the vetted connect and its error mapping."""
    try:
        return open_vetted_socket(
            policy,
            connection._dns_host,
            connection.port,
            timeout=connection.timeout,
            source_address=connection.source_address,
            socket_options=connection.socket_options,
        )
    except socket.gaierror as exc:
        raise NameResolutionError(connection.host, connection, exc) from exc
    except TimeoutError as exc:
        raise ConnectTimeoutError(
            connection, f"Connection to {connection.host} timed out."
        ) from exc
    except OSError as exc:
        raise NewConnectionError(
            connection, f"Failed to establish a new connection: {exc}"
        ) from exc


def _pool_classes(policy: EgressPolicy) -> dict[str, type[HTTPConnectionPool]]:
    class VettedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return _new_conn(self, policy)

    class VettedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return _new_conn(self, policy)

    class VettedHTTPPool(HTTPConnectionPool):
        ConnectionCls = VettedHTTPConnection

    class VettedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = VettedHTTPSConnection

    return {"http": VettedHTTPPool, "https": VettedHTTPSPool}


class EgressAdapter(HTTPAdapter):
    """requests transport whose every connection goes through `open_vetted_socket`."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy  # before HTTPAdapter.__init__, which builds the pool manager
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _pool_classes(self.policy)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        raise RuntimeError("webhook deliveries never go through a proxy")


def vetted_session(policy: EgressPolicy) -> requests.Session:
    """A session that follows no environment settings (proxies, .netrc) and connects only
    where `policy` allows."""
    session = requests.Session()
    session.trust_env = False
    adapter = EgressAdapter(policy)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
