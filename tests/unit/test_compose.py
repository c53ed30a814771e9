"""docker-compose.yml, Dockerfile and .env.example are checked here: no Docker engine runs in CI."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_yaml(path: Path) -> Any:
    try:
        import yaml
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("PyYAML is required to check docker-compose.yml under CI")
        pytest.skip("PyYAML not installed")
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(ROOT / "docker-compose.yml")
    assert isinstance(data, dict)
    return data


def test_services_and_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {
        "redis",
        "postgres",
        "migrate",
        "worker",
        "generator",
        "beat",
        "flower",
    }
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            assert source.startswith((".", "/")) or source in compose["volumes"], (name, volume)


def test_redis_never_evicts_and_persists(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_postgres_healthcheck_and_required_password(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_migrate_is_one_shot_and_gates_the_app(compose: dict[str, Any]) -> None:
    services = compose["services"]
    migrate = services["migrate"]
    assert migrate["command"] == ["signalgen", "db", "upgrade", "--sample-bars"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    for name in ("worker", "generator", "beat"):
        assert services[name]["depends_on"] == {
            "redis": {"condition": "service_healthy"},
            "postgres": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
        assert services[name]["environment"]["DATABASE_URL"].startswith("postgresql://")
        assert services[name]["environment"]["BROKER_URL"] == "redis://redis:6379/0"


def queues_of(command: list[str]) -> set[str]:
    [option] = [a for a in command if a.startswith("--queues=")]
    return set(option.split("=", 1)[1].split(","))


def test_generation_and_delivery_run_on_separate_workers(compose: dict[str, Any]) -> None:
    """Generation (which may wait on a hanging provider) never shares a pool with dispatch:
    every task queue is consumed by exactly one of the two services, `generate` by `generator`
    alone, and the worker that runs the dispatcher's intake is the one that consumes
    `dispatch`."""
    from signalgen.bus.topology import (
        DELIVERY_WORKER_QUEUES,
        DISPATCH_QUEUE,
        GENERATE_QUEUE,
        GENERATION_WORKER_QUEUES,
        TASK_QUEUES,
    )

    services = compose["services"]
    delivery = queues_of(services["worker"]["command"])
    generation = queues_of(services["generator"]["command"])
    assert delivery == set(DELIVERY_WORKER_QUEUES) and generation == set(GENERATION_WORKER_QUEUES)
    assert not delivery & generation
    assert delivery | generation == set(TASK_QUEUES)
    assert generation == {GENERATE_QUEUE} and DISPATCH_QUEUE in delivery
    for name in ("worker", "generator"):
        command = services[name]["command"]
        assert command[:3] == ["python", "-m", "tasks.worker"], name
        node = command[command.index("-n") + 1]
        assert node == f"{name}@%h", name
        assert f"-d {node.split('@')[0]}@$$HOSTNAME" in services[name]["healthcheck"]["test"][1]


def test_generate_is_routed_to_its_own_queue() -> None:
    from celery import Celery

    import celeryconfig

    app = Celery("routing-test", set_as_current=False)
    app.config_from_object(celeryconfig)
    router = app.amqp.router
    queue_of = {
        task: router.route({}, task)["queue"].name
        for task in (
            "signals.generate",
            "signals.dispatch",
            "signals.outbox_sweep",
            "signals.replay",
            "signals.repair",
            "pipelines.execute",
            "pipelines.fire_periodic",
        )
    }
    assert queue_of == {
        "signals.generate": "generate",
        "signals.dispatch": "dispatch",
        "signals.outbox_sweep": "signals",
        "signals.replay": "signals",
        "signals.repair": "signals",
        "pipelines.execute": "pipelines",
        "pipelines.fire_periodic": "pipelines",
    }


def test_worker_beat_flower_commands(compose: dict[str, Any]) -> None:
    services = compose["services"]
    worker = services["worker"]["command"]
    assert worker[:3] == ["python", "-m", "tasks.worker"]
    assert importlib.util.find_spec("tasks.worker") is not None
    assert queues_of(worker) == {"celery", "signals", "dispatch", "pipelines"}
    assert queues_of(services["generator"]["command"]) == {"generate"}
    beat = services["beat"]["command"]
    assert beat[:4] == ["celery", "-A", "tasks", "beat"]
    schedule = next(a for a in beat if a.startswith("--schedule=")).split("=", 1)[1]
    assert any(schedule.startswith(v.split(":")[1]) for v in services["beat"]["volumes"])
    flower = services["flower"]["command"]
    assert flower[:4] == ["celery", "-A", "tasks", "flower"]
    assert any(a.startswith("--basic-auth=${FLOWER_BASIC_AUTH:?") for a in flower)


def test_every_interpolated_variable_is_documented(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z_][A-Z0-9_]*)=", example, re.MULTILINE))
    assert used <= documented, used - documented
    required = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):\?", text))
    assert required == {"POSTGRES_PASSWORD", "FLOWER_BASIC_AUTH"}
    for name in required:  # present, uncommented and empty: the operator must fill it in
        assert re.search(rf"^{name}=$", example, re.MULTILINE), name


def test_dockerfile_installs_the_project_and_runs_unprivileged() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for directory in ("config", "schemas", "generators", "dispatcher", "tasks", "signalgen"):
        assert f"COPY {directory} ./{directory}" in text
        assert (ROOT / directory).is_dir()
    assert "COPY celeryconfig.py" in text
    assert 'pip install -e ".[plot]"' in text  # backtest charts in the container too
    assert re.search(r"^USER app$", text, re.MULTILINE)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".env" in ignored and ".venv" in ignored


def test_config_is_mounted_into_every_app_service(compose: dict[str, Any]) -> None:
    """The watchlist and generators are edited on the host, not baked into the image."""
    services = compose["services"]
    for name in ("migrate", "worker", "generator", "beat", "flower", "api"):
        assert "./config:/app/config:ro" in services[name]["volumes"], name
    assert (ROOT / "config" / "watchlist.json").is_file()


def test_beat_and_flower_have_healthchecks_that_run(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    """Every long-running service has a healthcheck; beat's and flower's call our probes,
    which answer as a healthcheck must (0 healthy, 1 not, one line why)."""
    import time

    from signalgen.interfaces.probes import beat_problem, main

    services = compose["services"]
    for name in ("redis", "postgres", "worker", "generator", "beat", "flower", "api"):
        assert services[name]["healthcheck"]["test"], name
    beat = services["beat"]["healthcheck"]["test"]
    assert beat[:5] == ["CMD", "python", "-m", "signalgen.interfaces.probes", "beat"]
    schedule = next(a for a in services["beat"]["command"] if a.startswith("--schedule="))
    assert beat[5] == schedule.split("=", 1)[1]
    flower = services["flower"]["healthcheck"]["test"]
    assert flower[:5] == ["CMD", "python", "-m", "signalgen.interfaces.probes", "http"]
    assert flower[5].startswith("http://127.0.0.1:5555/healthcheck")

    path = tmp_path / "celerybeat-schedule"
    assert "no schedule file" in (beat_problem(path, 600) or "")
    (tmp_path / "celerybeat-schedule.db").write_bytes(b"x")  # a dbm backend's suffix
    assert beat_problem(path, 600) is None
    assert beat_problem(path, 600, now=time.time() + 601) is not None
    assert main(["beat", str(path), "600"]) == 0
    assert main(["http", "http://127.0.0.1:9/healthcheck"]) == 1


def test_the_image_ships_the_sample_bars() -> None:
    """Sample data is part of the package (package-data), so the image has it."""
    from signalgen.paths import SAMPLE_DATA_DIR

    assert sorted(p.name for p in SAMPLE_DATA_DIR.glob("*.csv"))
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"sample_data/*.csv"' in pyproject
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert not any(pattern in ignored for pattern in ("signalgen", "*.csv", "sample_data"))
