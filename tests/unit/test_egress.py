"""Outbound policy: every host form and address class refused by default, allowed when the
operator's networks cover it, public addresses allowed; Celery allowlist. No real DNS: the
policy's resolver is injected."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from dispatcher.admission import Refused
from dispatcher.egress import (
    EgressPolicy,
    EgressRefused,
    check_celery,
    check_executor,
    check_url,
    classify,
    parse_host_literal,
    parse_networks,
)
from schemas.pipeline import CeleryExecutor, RecordExecutor, WebhookExecutor
from signalgen.config.operations import CeleryTarget, ExecutorPolicy

PUBLIC = "93.184.216.34"


def answering(*answers: str) -> Any:
    def resolve(host: str, port: int) -> list[str]:
        return list(answers)

    return resolve


def unresolvable(host: str, port: int) -> list[str]:
    import socket

    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


# (address, what the refusal says, a network that allows it)
CLASSES = [
    ("127.0.0.1", "a loopback address", "127.0.0.0/8"),
    ("127.255.0.9", "a loopback address", "127.0.0.0/8"),
    ("::1", "a loopback address", "::1/128"),
    ("10.1.2.3", "a private address (RFC 1918)", "10.0.0.0/8"),
    ("172.16.0.1", "a private address (RFC 1918)", "172.16.0.0/12"),
    ("192.168.1.1", "a private address (RFC 1918)", "192.168.0.0/16"),
    ("fd12:3456::1", "a unique local (private) address", "fc00::/7"),
    ("169.254.1.1", "a link-local address", "169.254.0.0/16"),
    ("fe80::1", "a link-local address", "fe80::/10"),
    ("224.0.0.1", "a multicast address", "224.0.0.0/4"),
    ("ff02::1", "a multicast address", "ff00::/8"),
    ("0.0.0.0", "an unspecified ('this network') address", "0.0.0.0/8"),
    ("::", "an unspecified address", "::/128"),
    ("240.0.0.1", "a reserved address", "240.0.0.0/4"),
    ("255.255.255.255", "a broadcast address", "255.255.255.255/32"),
    ("100.64.0.1", "a shared (carrier-grade NAT) address", "100.64.0.0/10"),
    ("198.18.0.1", "a benchmarking address", "198.18.0.0/15"),
    ("2001:2::1", "a benchmarking address", "2001:2::/48"),
    ("192.0.2.1", "a documentation address", "192.0.2.0/24"),
    ("198.51.100.1", "a documentation address", "198.51.100.0/24"),
    ("203.0.113.1", "a documentation address", "203.0.113.0/24"),
    ("2001:db8::1", "a documentation address", "2001:db8::/32"),
    ("169.254.169.254", "a cloud metadata address", "169.254.169.254/32"),
    ("fd00:ec2::254", "a cloud metadata address", "fd00:ec2::254/128"),
    ("::ffff:127.0.0.1", "a loopback address", "127.0.0.1/32"),
    ("::ffff:169.254.169.254", "a cloud metadata address", "169.254.169.254/32"),
    ("::ffff:10.0.0.1", "a private address (RFC 1918)", "10.0.0.0/8"),
    ("64:ff9b::7f00:1", "a NAT64 address embedding 127.0.0.1", "64:ff9b::/96"),
    ("64:ff9b::a9fe:a9fe", "a NAT64 address embedding 169.254.169.254", "64:ff9b::/96"),
    ("2002:7f00:1::1", "a 6to4 address embedding 127.0.0.1", "2002::/16"),
    ("2002:c0a8:101::1", "a 6to4 address embedding 192.168.1.1", "2002::/16"),
    ("::7f00:1", "a reserved address", "::/96"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "a Teredo address", "2001::/32"),
]


@pytest.mark.parametrize(("address", "kind", "allowance"), CLASSES)
def test_each_address_class_is_refused_unless_allowed(
    address: str, kind: str, allowance: str
) -> None:
    ip = ipaddress.ip_address(address)
    assert (EgressPolicy().refusal(ip) or "").startswith(kind)
    with pytest.raises(Refused) as refused:
        check_url("http://hook.example.test/x", EgressPolicy(resolve=answering(address)))
    assert refused.value.field == "executor.url"
    assert f"resolves to {ip}, {kind}" in refused.value.reason
    assert "WEBHOOK_ALLOW_NETWORKS" in refused.value.reason
    allowed = EgressPolicy(allow=parse_networks(allowance), resolve=answering(address))
    assert allowed.refusal(ip) is None
    check_url("http://hook.example.test/x", allowed)
    assert allowed.vet("hook.example.test", 80) == [ip]


@pytest.mark.parametrize(
    "address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"]
)
def test_public_addresses_are_allowed_without_any_allowance(address: str) -> None:
    assert classify(ipaddress.ip_address(address)) is None
    check_url("https://hook.example.test/x", EgressPolicy(resolve=answering(address)))


def test_metadata_needs_an_allowance_naming_it_exactly() -> None:
    metadata = ipaddress.ip_address("169.254.169.254")
    link_local = EgressPolicy(allow=parse_networks("169.254.0.0/16"))
    assert link_local.refusal(ipaddress.ip_address("169.254.1.1")) is None
    assert link_local.refusal(metadata) == "a cloud metadata address"
    assert EgressPolicy(allow=parse_networks("169.254.169.254/32")).refusal(metadata) is None


HOST_FORMS = [
    ("http://2130706433:6379/", "127.0.0.1"),
    ("http://0x7f.1/", "127.0.0.1"),
    ("http://0x7f000001/", "127.0.0.1"),
    ("http://0177.0.0.1/", "127.0.0.1"),
    ("http://017700000001/", "127.0.0.1"),
    ("http://127.1/", "127.0.0.1"),
    ("http://127.0.0.1./", "127.0.0.1"),
    ("http://0/", "0.0.0.0"),
    ("http://[::1]:5432/", "::1"),
    ("http://[::ffff:127.0.0.1]/", "::ffff:7f00:1"),
    ("http://[::ffff:7f00:1]/", "::ffff:7f00:1"),
    ("http://[fe80::1%25eth0]/", "fe80::1"),
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
    ("http://0xa9fea9fe/", "169.254.169.254"),
]


@pytest.mark.parametrize(("url", "address"), HOST_FORMS)
def test_numeric_host_forms_are_read_as_the_address_they_mean(url: str, address: str) -> None:
    # The resolver lies (answers public): the literal itself is still refused.
    with pytest.raises(Refused) as refused:
        check_url(url, EgressPolicy(resolve=answering(PUBLIC)))
    assert refused.value.field == "executor.url"
    assert address in refused.value.reason
    # And a real resolver (getaddrinfo reads these forms too) is not needed to refuse them.
    with pytest.raises(Refused):
        check_url(url, EgressPolicy(resolve=unresolvable))


def test_host_literal_parsing() -> None:
    assert str(parse_host_literal("2130706433")) == "127.0.0.1"
    assert str(parse_host_literal("0x7F.0.0.1")) == "127.0.0.1"
    assert str(parse_host_literal("10.1")) == "10.0.0.1"
    assert str(parse_host_literal("10.1.257")) == "10.1.1.1"
    assert str(parse_host_literal("[::1]")) == "::1"
    for name in ("example.com", "1.2.3.4.5", "256.1.1.1", "08.1.1.1", "1.16777216", "0x1g", ""):
        assert parse_host_literal(name) is None, name


def test_localhost_name_resolves_to_loopback_and_is_refused_by_default() -> None:
    # The real resolver: localhost is 127.0.0.1 (and ::1) on every host we run on.
    with pytest.raises(Refused) as refused:
        check_url("http://localhost:5672/", EgressPolicy())
    assert "localhost resolves to" in refused.value.reason
    assert "a loopback address" in refused.value.reason
    check_url("http://localhost:5672/", EgressPolicy(allow=parse_networks("127.0.0.1/32,::1/128")))


def test_any_refused_answer_refuses_the_name() -> None:
    policy = EgressPolicy(resolve=answering(PUBLIC, "10.0.0.1"))
    with pytest.raises(Refused, match=r"resolves to 10\.0\.0\.1"):
        check_url("http://hook.example.test/", policy)
    with pytest.raises(EgressRefused):
        policy.vet("hook.example.test", 80)


def test_an_unresolvable_host_is_refused_at_save_time() -> None:
    with pytest.raises(Refused) as refused:
        check_url("http://hoook.example.test/", EgressPolicy(resolve=unresolvable))
    assert refused.value.field == "executor.url"
    assert refused.value.reason == "host 'hoook.example.test' does not resolve"


def test_only_http_and_https() -> None:
    with pytest.raises(Refused, match="only http"):
        check_url("ftp://hook.example.test/", EgressPolicy(resolve=answering(PUBLIC)))


def test_allow_networks_parsing_names_the_bad_entry() -> None:
    assert parse_networks("") == ()
    assert [str(n) for n in parse_networks(" 127.0.0.1/32 , ::1/128,")] == [
        "127.0.0.1/32",
        "::1/128",
    ]
    for bad in ("127.0.0.1/33", "localhost", "10.0.0.1/8", "fe80::/200"):
        with pytest.raises(ValueError, match=r"WEBHOOK_ALLOW_NETWORKS: .* is not a network"):
            parse_networks(f"127.0.0.1/32,{bad}")


def test_check_executor_uses_the_settings_allowance(monkeypatch: pytest.MonkeyPatch) -> None:
    from signalgen.settings import get_settings

    hook = WebhookExecutor.model_validate({"url": "http://127.0.0.1:6379/", "secret": "s" * 16})
    monkeypatch.setenv("WEBHOOK_ALLOW_NETWORKS", "")
    get_settings.cache_clear()
    try:
        with pytest.raises(Refused) as refused:
            check_executor(hook)
        assert refused.value.reason == (
            "127.0.0.1 is a loopback address; not allowed (WEBHOOK_ALLOW_NETWORKS)"
        )
        monkeypatch.setenv("WEBHOOK_ALLOW_NETWORKS", "127.0.0.1/32")
        get_settings.cache_clear()
        check_executor(hook)
        check_executor(RecordExecutor())
    finally:
        get_settings.cache_clear()


# -- Celery -------------------------------------------------------------------------------------

ALLOWLIST = ExecutorPolicy(
    celery_tasks=(CeleryTarget(task="backend.trade", queues=("backend", "backend.slow")),)
)


@pytest.mark.parametrize(
    ("task", "queue", "field", "says"),
    [
        ("signals.replay", "backend", "executor.task", "this service's own tasks"),
        ("pipelines.execute", "backend", "executor.task", "this service's own tasks"),
        ("signals.dispatch", "backend", "executor.task", "this service's own tasks"),
        ("celery.backend_cleanup", "backend", "executor.task", "this service's own tasks"),
        ("backend.trade", "signals", "executor.queue", "this service's own queues"),
        ("backend.trade", "pipelines", "executor.queue", "this service's own queues"),
        ("backend.trade", "dispatch", "executor.queue", "this service's own queues"),
        ("backend.trade", "signals.dispatch", "executor.queue", "this service's own queues"),
        ("backend.trade", "celery", "executor.queue", "this service's own queues"),
        ("backend.other", "backend", "executor.task", "not on the operator's allowlist"),
        ("backend.trade", "tenant-b", "executor.queue", "not allowed for task 'backend.trade'"),
    ],
)
def test_celery_targets_outside_the_allowlist_are_refused(
    task: str, queue: str, field: str, says: str
) -> None:
    with pytest.raises(Refused) as refused:
        check_celery(task, queue, ALLOWLIST)
    assert refused.value.field == field and says in refused.value.reason
    with pytest.raises(Refused):
        check_executor(CeleryExecutor(task=task, queue=queue), executors=ALLOWLIST)


def test_allowlisted_celery_targets_pass() -> None:
    check_celery("backend.trade", "backend", ALLOWLIST)
    check_celery("backend.trade", "backend.slow", ALLOWLIST)
    check_executor(CeleryExecutor(task="backend.trade", queue="backend"), executors=ALLOWLIST)
    with pytest.raises(Refused):  # the default: no Celery task at all
        check_celery("backend.trade", "backend", ExecutorPolicy())


def test_a_bad_allowance_stops_start_up_naming_the_setting() -> None:
    from pydantic import ValidationError

    from signalgen.settings import Settings

    with pytest.raises(ValidationError, match=r"WEBHOOK_ALLOW_NETWORKS: '127\.0\.0\.1/33'"):
        Settings(WEBHOOK_ALLOW_NETWORKS="127.0.0.1/32,127.0.0.1/33")
    assert Settings(WEBHOOK_ALLOW_NETWORKS="10.0.0.0/8").webhook_allow_networks == "10.0.0.0/8"


# -- unknown task names never become metric labels ---------------------------------------------


def test_our_task_list_matches_the_registered_tasks() -> None:
    from signalgen.ops.metrics import OWN_TASKS
    from tasks import app

    app.loader.import_default_modules()
    assert {name for name in app.tasks if not name.startswith("celery.")} == OWN_TASKS


def test_dead_letters_of_unknown_tasks_are_labelled_other(sqlite_db: Any) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from signalgen.config.operations import OperationsConfig
    from signalgen.ops.metrics import BusCollector
    from signalgen.storage.models import DeadLetter

    with sqlite_db.session() as session:
        for name in ("tenant.secret_task_name", "x:y", "signals.replay", "evil.task"):
            session.add(
                DeadLetter(
                    stage="refused",
                    reason=f"unknown task {name!r} refused",
                    body=b"{}",
                    headers={},
                )
            )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        BusCollector(sqlite_db, redis_client=None, broker_url=None, config=OperationsConfig())
    )
    text = generate_latest(registry).decode()
    lines = [line for line in text.splitlines() if line.startswith("signalgen_dead_letters{")]
    assert len(lines) == 2, lines
    assert any("unknown task 'other' refused" in line and line.endswith(" 3.0") for line in lines)
    assert any("unknown task 'signals.replay' refused" in line for line in lines)
    for secret in ("tenant", "evil", "x:y"):
        assert secret not in text
