"""Executors: signed webhooks against a local HTTP server, retries with back-off, send_task."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from dispatcher.egress import DELIVERY_REFUSED, EgressPolicy, IPAddress, check_url, parse_networks
from dispatcher.executors import (
    ExecutionContext,
    backoff_delay,
    execution_task_id,
    run_celery,
    run_record,
    run_webhook,
    sign,
)
from schemas.pipeline import CeleryExecutor, RecordExecutor, WebhookExecutor
from signalgen.config.operations import CeleryTarget, ExecutorPolicy

SECRET = "a-very-long-shared-secret"
ALLOWLIST = ExecutorPolicy(celery_tasks=(CeleryTarget(task="backend.trade", queues=("backend",)),))
CONTEXT = ExecutionContext(7, uuid.UUID(int=5), "signal:abc:g0", json.dumps({"signal_id": "x"}))


class Receiver(BaseHTTPRequestHandler):
    """Verifies the signature like a real receiver; answers from `script` in order."""

    script: list[int] = []
    seen: list[dict[str, Any]] = []
    redirect_to = "http://169.254.169.254/latest/meta-data/"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        timestamp = self.headers["X-Signal-Timestamp"]
        key = self.headers["X-Idempotency-Key"]
        # The documented recipe: HMAC-SHA256 of "<timestamp>.<idempotency key>.<body>".
        expected = hmac.new(
            SECRET.encode(), f"{timestamp}.{key}.".encode() + body, hashlib.sha256
        ).hexdigest()
        valid = hmac.compare_digest(expected, self.headers["X-Signal-Signature"])
        fresh = abs(time.time() - int(timestamp)) < 300
        self.seen.append(
            {"body": body, "valid": valid, "fresh": fresh, "key": key, "path": self.path}
        )
        status = self.script.pop(0) if self.script else 200
        if status == 0:  # hang past the client's timeout
            time.sleep(0.5)
            status = 200
        self.send_response(status if valid else 401)
        if 300 <= status < 400:
            self.send_header("Location", self.redirect_to)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.script, Receiver.seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()
    server.server_close()


def webhook(url: str, **overrides: Any) -> WebhookExecutor:
    return WebhookExecutor.model_validate(
        {"url": url, "secret": SECRET, "timeout_seconds": 2, "backoff_seconds": 0.01, **overrides}
    )


def test_webhook_signed_and_verified(receiver: str) -> None:
    outcome = run_webhook(CONTEXT, webhook(receiver))
    assert outcome.ok and outcome.detail["status"] == 200
    [request] = Receiver.seen
    assert request["valid"] and request["fresh"]
    assert request["body"] == CONTEXT.payload.encode()
    assert request["key"] == f"{CONTEXT.pipeline_id}:{CONTEXT.idempotency_key}"


def test_wrong_secret_is_rejected_by_the_receiver(receiver: str) -> None:
    outcome = run_webhook(CONTEXT, webhook(receiver, secret="another-long-secret-value"))
    assert not outcome.ok and outcome.error == "HTTP 401"
    assert len(Receiver.seen) == 1  # 401 is permanent: not retried


def test_retries_5xx_then_succeeds_with_growing_delays(receiver: str) -> None:
    Receiver.script = [503, 500]
    delays: list[float] = []
    outcome = run_webhook(
        CONTEXT, webhook(receiver, backoff_seconds=0.5), sleep=delays.append, rng=lambda: 1.0
    )
    assert outcome.ok
    assert [a["status"] for a in outcome.detail["attempts"]] == [503, 500, 200]
    assert delays == [0.5, 1.0]


def test_timeout_retried_and_gives_up(receiver: str) -> None:
    Receiver.script = [0, 0]
    outcome = run_webhook(
        CONTEXT, webhook(receiver, timeout_seconds=0.1, max_attempts=2), sleep=lambda _: None
    )
    assert not outcome.ok and "Timeout" in (outcome.error or "")
    assert len(outcome.detail["attempts"]) == 2


def test_connection_refused_is_a_failed_outcome() -> None:
    outcome = run_webhook(CONTEXT, webhook("http://127.0.0.1:9/"), sleep=lambda _: None)
    assert not outcome.ok and "ConnectionError" in (outcome.error or "")


def test_backoff_has_jitter_and_a_cap() -> None:
    assert backoff_delay(1, 1.0, rng=lambda: 0.0) == 0.5
    assert backoff_delay(3, 1.0, rng=lambda: 1.0) == 4.0
    assert backoff_delay(20, 1.0, rng=lambda: 1.0) == 30.0


def test_record_and_celery_executors() -> None:
    assert run_record(CONTEXT, RecordExecutor()).ok
    sent: list[tuple[str, dict[str, Any]]] = []
    outcome = run_celery(
        CONTEXT,
        CeleryExecutor(task="backend.trade", queue="backend"),
        send_task=lambda name, **kw: sent.append((name, kw)),
        policy=ALLOWLIST,
    )
    assert outcome.ok
    [(name, options)] = sent
    assert name == "backend.trade" and options["queue"] == "backend"
    assert options["args"] == [CONTEXT.payload]
    assert options["task_id"] == execution_task_id(CONTEXT.pipeline_id, CONTEXT.idempotency_key)
    assert options["task_id"] == outcome.detail["task_id"]


# -- signature ----------------------------------------------------------------------------------


def test_signature_covers_timestamp_key_and_body() -> None:
    body = b'{"signal_id":"x"}'
    base = sign(SECRET, "1700000000", "p:k", body)
    expected = hmac.new(SECRET.encode(), b"1700000000.p:k." + body, hashlib.sha256).hexdigest()
    assert base == expected
    assert sign(SECRET, "1700000000", "p:other", body) != base  # a swapped key is detected
    assert sign(SECRET, "1700000001", "p:k", body) != base
    assert sign(SECRET, "1700000000", "p:k", body + b" ") != base


# -- outbound policy at delivery ----------------------------------------------------------------

LOOPBACK = parse_networks("127.0.0.1/32")


def resolving(*answers: str, log: list[str] | None = None) -> Any:
    """A resolver answering `answers` for any name (no real DNS)."""

    def resolve(host: str, port: int) -> list[str]:
        if log is not None:
            log.append(host)
        return list(answers)

    return resolve


def test_a_refused_destination_is_one_failed_attempt_without_timing(receiver: str) -> None:
    delays: list[float] = []
    outcome = run_webhook(CONTEXT, webhook(receiver), egress=EgressPolicy(), sleep=delays.append)
    assert not outcome.ok and outcome.error == DELIVERY_REFUSED
    assert outcome.detail["attempts"] == [{"error": "refused by egress policy"}]
    assert Receiver.seen == [] and delays == []  # nothing reached the receiver, no retry
    # A closed port gets the very same answer: the outcome does not reveal port state.
    closed = run_webhook(CONTEXT, webhook("http://127.0.0.1:9/"), egress=EgressPolicy())
    assert (closed.error, closed.detail) == (outcome.error, outcome.detail)
    # The allowed case: the same receiver, allowed by the operator, gets a valid delivery.
    assert run_webhook(CONTEXT, webhook(receiver), egress=EgressPolicy(allow=LOOPBACK)).ok
    assert [r["valid"] for r in Receiver.seen] == [True]


def test_dns_rebinding_is_refused_at_delivery(receiver: str) -> None:
    port = receiver.split(":")[2].split("/")[0]
    url = f"http://hooks.example.test:{port}/hook"
    check_url(url, EgressPolicy(resolve=resolving("93.184.216.34")))  # saved: public then
    outcome = run_webhook(
        CONTEXT, webhook(url), egress=EgressPolicy(resolve=resolving("127.0.0.1"))
    )
    assert not outcome.ok and outcome.error == DELIVERY_REFUSED and Receiver.seen == []
    # One refused answer among several is enough.
    mixed = EgressPolicy(resolve=resolving("93.184.216.34", "127.0.0.1"))
    assert run_webhook(CONTEXT, webhook(url), egress=mixed).error == DELIVERY_REFUSED
    assert Receiver.seen == []


def test_delivery_connects_to_the_vetted_address_not_a_second_lookup(receiver: str) -> None:
    # The name exists only in the injected resolver: the request reaches the receiver only if
    # the socket connects to the address the policy vetted (no other DNS lookup happens).
    port = receiver.split(":")[2].split("/")[0]
    looked_up: list[str] = []
    policy = EgressPolicy(allow=LOOPBACK, resolve=resolving("127.0.0.1", log=looked_up))
    outcome = run_webhook(CONTEXT, webhook(f"http://hooks.example.test:{port}/hook"), egress=policy)
    assert outcome.ok, outcome.error
    assert looked_up == ["hooks.example.test"]
    assert [r["valid"] for r in Receiver.seen] == [True]


class RecordingPolicy(EgressPolicy):
    checked: list[IPAddress]

    def check(self, address: IPAddress) -> None:
        self.checked.append(address)
        super().check(address)


def test_the_connected_peer_is_checked_too(receiver: str) -> None:
    port = receiver.split(":")[2].split("/")[0]
    policy = RecordingPolicy(allow=LOOPBACK, resolve=resolving("127.0.0.1"))
    object.__setattr__(policy, "checked", [])
    assert run_webhook(CONTEXT, webhook(f"http://hooks.example.test:{port}/"), egress=policy).ok
    # Once for the resolved address, once for the socket's peer (getpeername).
    assert [str(a) for a in policy.checked] == ["127.0.0.1", "127.0.0.1"]


def test_a_redirect_is_a_failure_and_never_followed(receiver: str) -> None:
    Receiver.script = [302]
    Receiver.redirect_to = receiver + "/internal"
    outcome = run_webhook(
        CONTEXT, webhook(receiver), egress=EgressPolicy(allow=LOOPBACK), sleep=lambda _: None
    )
    assert not outcome.ok and outcome.error == "HTTP 302: redirect not followed"
    assert [r["path"] for r in Receiver.seen] == ["/hook"]  # not retried, not followed


def test_proxy_environment_does_not_bypass_the_policy(
    receiver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy on an allowed address would reach anything: the environment is not trusted.
    monkeypatch.setenv("HTTP_PROXY", receiver)
    monkeypatch.setenv("http_proxy", receiver)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    outcome = run_webhook(
        CONTEXT, webhook("http://169.254.169.254/latest/"), egress=EgressPolicy(allow=LOOPBACK)
    )
    assert outcome.error == DELIVERY_REFUSED and Receiver.seen == []


class FakeSession:
    """An injected transport: records what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def post(self, url: str, **_: Any) -> Any:
        self.sent.append(url)
        return type("Response", (), {"status_code": 204})()


def test_an_injected_session_still_gets_the_destination_vetted() -> None:
    fake = FakeSession()
    refused = run_webhook(
        CONTEXT,
        webhook("http://hooks.example.test/hook"),
        http=fake,  # type: ignore[arg-type]
        egress=EgressPolicy(resolve=resolving("10.0.0.7")),
    )
    assert refused.error == DELIVERY_REFUSED and fake.sent == []
    allowed = run_webhook(
        CONTEXT,
        webhook("http://hooks.example.test/hook"),
        http=fake,  # type: ignore[arg-type]
        egress=EgressPolicy(resolve=resolving("93.184.216.34")),
    )
    assert allowed.ok and fake.sent == ["http://hooks.example.test/hook"]


def test_a_celery_target_no_longer_allowed_is_not_sent() -> None:
    sent: list[str] = []
    for config, policy in (
        (CeleryExecutor(task="backend.trade", queue="backend"), ExecutorPolicy()),
        (CeleryExecutor(task="backend.trade", queue="other"), ALLOWLIST),
        (CeleryExecutor(task="signals.replay", queue="backend"), ALLOWLIST),
    ):
        outcome = run_celery(
            CONTEXT, config, send_task=lambda name, **_: sent.append(name), policy=policy
        )
        assert not outcome.ok and "not allowed" in (outcome.error or "")
    assert sent == []


def self_signed(tmp_path: Any, name: str) -> tuple[str, str]:
    """A certificate for `name` (and its key), as PEM files."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def test_https_is_pinned_to_the_vetted_address_and_verified_for_the_host_name(
    tmp_path: Any,
) -> None:
    import ssl

    import requests

    from dispatcher.egress_http import vetted_session

    cert, key = self_signed(tmp_path, "hooks.example.test")
    Receiver.script, Receiver.seen = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    policy = EgressPolicy(allow=LOOPBACK, resolve=resolving("127.0.0.1"))
    stamp = str(int(time.time()))
    try:
        with vetted_session(policy) as session:
            # Connected to 127.0.0.1, yet SNI and the certificate check use the URL's host.
            response = session.post(
                f"https://hooks.example.test:{port}/hook",
                data=b"{}",
                headers={
                    "X-Signal-Timestamp": stamp,
                    "X-Idempotency-Key": "k",
                    "X-Signal-Signature": sign(SECRET, stamp, "k", b"{}"),
                },
                verify=cert,
                timeout=5,
            )
            assert response.status_code == 200
            # A name the certificate does not cover fails verification: it is still checked.
            with pytest.raises(requests.exceptions.SSLError):
                session.post(f"https://other.example.test:{port}/hook", verify=cert, timeout=5)
        assert len(Receiver.seen) == 1
    finally:
        server.shutdown()
        server.server_close()
