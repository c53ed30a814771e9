"""The one `Settings`: every variable the code reads is declared there (or named below as
deliberately not a setting), its durations are its seconds, the cache resets for tests."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from signalgen.paths import CONFIG_DIR, PROJECT_ROOT
from signalgen.settings import (
    Settings,
    get_settings,
    reset_settings,
    variable_names,
)

#: The service's code: every variable it reads must be a `Settings` field.
SERVICE = ("signalgen", "dispatcher", "tasks", "generators", "schemas", "celeryconfig.py")
#: Code around the service (may read variables of its own, named in NOT_SETTINGS).
AROUND = ("tests", "bench")

#: Variables read from the environment that are deliberately not settings: name or prefix -> why.
NOT_SETTINGS = {
    "CI": "tests: a missing service fails under CI instead of skipping",
    "TEST_": "tests: where the test services are (TEST_REDIS_HOST, TEST_AMQP_URL, ...)",
    "FAULTS_": "tests/faults: knobs of the fault drills",
    "SIGNALGEN_ARTIFACTS_DIR": "tests: where test runs leave screenshots and reports",
    "SG_TEST_UNSET_WEBHOOK_SECRET": "tests: a webhook `secret_env` left unset on purpose",
    "HTTP_PROXY": "tests: a proxy set to show webhook egress ignores proxy variables",
    "NO_PROXY": "tests: as HTTP_PROXY",
    "BENCH_": "bench: benchmark knobs, not the service's",
    "SOAK_": "bench: soak-test knobs, not the service's",
    "SCREENSHOT_": "signalgen/interfaces/screenshots.py: flag defaults of a developer tool",
}

#: Settings variables the service still reads raw: (file, variable) -> why it cannot use
#: `get_settings()` there.
RAW_READS = {
    ("signalgen/startup.py", "LOG_LEVEL"): "whether to show a traceback when Settings failed",
    ("signalgen/failures.py", "BROKER_URL"): "names the URLs when Settings itself failed",
    ("signalgen/failures.py", "DATABASE_URL"): "as BROKER_URL",
    ("signalgen/failures.py", "REDIS_URL"): "as BROKER_URL",
}


_READ = re.compile(
    r"""(?:environ\.get|environ\.pop|environ\.setdefault|getenv|setenv|delenv|environ\[)"""
    r"""\(?\s*["']([A-Z][A-Z0-9_]*)["']"""
)


def _python_files(roots: tuple[str, ...]) -> Iterator[Path]:
    for root in roots:
        path = PROJECT_ROOT / root
        yield from [path] if path.is_file() else sorted(path.rglob("*.py"))


def _reads(roots: tuple[str, ...]) -> set[tuple[str, str]]:
    """(file relative to the project, variable) for each literal variable name the code reads
    (or, in tests, sets) through os.environ / getenv / monkeypatch."""
    found = set()
    for path in _python_files(roots):
        for match in _READ.finditer(path.read_text(encoding="utf-8")):
            found.add((path.relative_to(PROJECT_ROOT).as_posix(), match.group(1)))
    return found


def _allowed(name: str) -> bool:
    return any(name == key or (key.endswith("_") and name.startswith(key)) for key in NOT_SETTINGS)


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The environment without the variables these tests set, read afresh before and after."""
    for name in variable_names():
        if name not in ("WEBHOOK_ALLOW_NETWORKS", "SECRETS_KEYS"):  # the suite's own
            monkeypatch.delenv(name, raising=False)
    reset_settings()
    yield monkeypatch
    monkeypatch.undo()
    reset_settings()


def test_every_variable_the_code_reads_is_a_setting_or_named_here() -> None:
    declared = set(variable_names())
    unknown = sorted(
        f"{file}: {name}"
        for file, name in _reads(SERVICE + AROUND)
        if name not in declared and not _allowed(name)
    )
    assert not unknown, (
        "declare these in signalgen.settings.Settings (or, if they are not the service's, "
        f"in NOT_SETTINGS with the reason): {unknown}"
    )
    names = {name for _, name in _reads(SERVICE + AROUND)}
    stale = [key for key in NOT_SETTINGS if not any(n.startswith(key) for n in names)]
    assert not stale, f"nothing reads these any more: drop them from NOT_SETTINGS: {stale}"


def test_the_service_reads_settings_through_settings() -> None:
    declared = set(variable_names())
    raw = sorted(
        f"{file}: {name}"
        for file, name in _reads(SERVICE)
        if name in declared and (file, name) not in RAW_READS
    )
    assert not raw, f"read these through get_settings(), not os.environ: {raw}"
    stale = set(RAW_READS) - _reads(SERVICE)
    assert not stale, f"no longer read raw: drop them from RAW_READS: {stale}"


def test_every_setting_is_read_somewhere() -> None:
    """A declared variable nothing reads is a stale line in the docs."""
    code = "\n".join(
        path.read_text(encoding="utf-8")
        for path in _python_files(SERVICE)
        if path != PROJECT_ROOT / "signalgen" / "settings.py"
    )
    views = (PROJECT_ROOT / "signalgen" / "settings.py").read_text(encoding="utf-8")
    views = views[views.index("# Seconds as durations") :]
    unread = [
        name
        for name in Settings.model_fields
        if not re.search(rf"""(\.{name}\b|["']{name}["'])""", code + views)
    ]
    assert not unread


def test_one_pydantic_settings_class() -> None:
    classes = {}
    for path in _python_files(SERVICE):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(base, ast.Name) and base.id == "BaseSettings" for base in node.bases
            ):
                classes[path.relative_to(PROJECT_ROOT).as_posix()] = node.name
    assert classes.pop("signalgen/settings.py") == "Settings"
    assert not classes, classes


def test_each_field_names_its_variable_and_says_what_it_is() -> None:
    for name, info in Settings.model_fields.items():
        assert info.validation_alias == name.upper()
        assert info.description and "\n" not in info.description, name


def test_get_settings_is_read_once_and_reset_reads_again(fresh: pytest.MonkeyPatch) -> None:
    first = get_settings()
    fresh.setenv("MARKET_CALENDAR", "XLON")
    assert get_settings() is first
    assert first.market_calendar == "XNYS"
    reset_settings()
    assert get_settings().market_calendar == "XLON"
    fresh.setenv("MARKET_CALENDAR", "24/7")
    get_settings.cache_clear()  # what the existing tests call: the same reset
    assert get_settings().market_calendar == "24/7"


def test_durations_are_the_seconds_settings(fresh: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    assert (settings.execution_lease_seconds, settings.claimed_grace_seconds) == (900.0, 60.0)
    assert (settings.pipeline_index_check_seconds, settings.pipeline_index_max_age_seconds) == (
        1.0,
        60.0,
    )
    assert settings.execution_lease == timedelta(seconds=900)
    assert settings.claimed_grace == timedelta(seconds=60)

    fresh.setenv("EXECUTION_LEASE_SECONDS", "120")
    fresh.setenv("PIPELINE_INDEX_MAX_AGE_SECONDS", "5")
    reset_settings()
    settings = get_settings()
    assert settings.execution_lease == timedelta(seconds=120)
    assert settings.pipeline_index_max_age_seconds == 5.0


def test_overrides_by_variable_name(fresh: pytest.MonkeyPatch) -> None:
    repair = Settings(REPAIR_GRACE_SECONDS=60, REPAIR_HORIZON_SECONDS=3600)
    assert (repair.repair_grace, repair.repair_horizon) == (
        timedelta(seconds=60),
        timedelta(hours=1),
    )
    assert (repair.repair_batch, repair.repair_max_backlog, repair.outbox_sweep_age_seconds) == (
        500,
        100,
        30.0,
    )
    assert repair is not get_settings()  # its own, the process's untouched
    assert get_settings().repair_grace_seconds == 300.0

    api = Settings(API_RATE_LIMIT=1_000_000, AUTH_FAILURE_WINDOW_SECONDS=3600)
    assert (api.api_rate_limit, api.auth_failure_window_seconds, api.api_rate_window_seconds) == (
        1_000_000,
        3600,
        60,
    )
    with pytest.raises(ValidationError, match="API_KEY_CACHE_SECONDS"):
        Settings(API_KEY_CACHE_SECONDS=5)  # limits as for the variable
    with pytest.raises(ValidationError):
        repair.repair_batch = 1  # type: ignore[misc]


#: The values the replaced RepairSettings/ApiSettings classes read, by variable: (unset, a value
#: set in the environment as its text). `Settings` must read the environment to the same values.
# fmt: off
REPLACED_VIEWS = {
    "REPAIR_INTERVAL_SECONDS": (60.0, 15.0),  "REPAIR_GRACE_SECONDS": (300.0, 90.0),
    "REPAIR_HORIZON_SECONDS": (86400.0, 7200.0),  "OUTBOX_SWEEP_AGE_SECONDS": (30.0, 5.0),
    "REPAIR_BATCH": (500, 50),  "REPAIR_MAX_BACKLOG": (100, 0),
    "API_RATE_LIMIT": (600, 7),  "API_RATE_WINDOW_SECONDS": (60, 10),
    "API_KEY_CACHE_SECONDS": (1.0, 0.0),  "AUTH_FAILURES_PER_ADDRESS": (20, 3),
    "AUTH_FAILURES_PER_KEY": (20, 4),  "AUTH_FAILURE_WINDOW_SECONDS": (60, 600),
}
# fmt: on


@pytest.mark.parametrize("configured", [False, True])
def test_repair_and_api_settings_read_the_environment(
    fresh: pytest.MonkeyPatch, configured: bool
) -> None:
    expected = {}
    for name, (unset, value) in REPLACED_VIEWS.items():
        if configured:
            fresh.setenv(name, str(value))
        expected[name.lower()] = value if configured else unset
    reset_settings()
    settings = get_settings()
    assert {name: getattr(settings, name) for name in expected} == expected
    assert settings.repair_grace == timedelta(seconds=expected["repair_grace_seconds"])
    assert settings.repair_horizon == timedelta(seconds=expected["repair_horizon_seconds"])
    assert settings.outbox_sweep_age == timedelta(seconds=expected["outbox_sweep_age_seconds"])


@pytest.mark.parametrize(
    ("value", "lock", "send_once"),
    [
        (None, False, True),
        ("1", True, True),
        (" Yes ", True, True),
        ("on", True, True),
        ("0", False, False),
        ("OFF", False, False),
        ("no", False, False),
        ("", False, True),  # neither word: the default, as the beat always read them
        ("maybe", False, True),
    ],
)
def test_beat_switches_read_as_before(
    fresh: pytest.MonkeyPatch, value: str | None, lock: bool, send_once: bool
) -> None:
    if value is not None:
        fresh.setenv("BEAT_LOCK", value)
        fresh.setenv("BEAT_SEND_ONCE", value)
    settings = Settings()
    assert (settings.beat_lock, settings.beat_send_once) == (lock, send_once)


def test_beat_lock_ttl_must_be_positive(fresh: pytest.MonkeyPatch) -> None:
    assert Settings().beat_lock_ttl_seconds == 30.0
    with pytest.raises(ValidationError, match="BEAT_LOCK_TTL_SECONDS"):
        Settings(BEAT_LOCK_TTL_SECONDS=0)  # type: ignore[call-arg]


def test_config_paths_blank_means_default(fresh: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fresh.setenv("OPERATIONS_CONFIG_PATH", "")
    fresh.setenv("WEBHOOKS_CONFIG_PATH", "")
    settings = Settings()
    assert settings.operations_config_path == CONFIG_DIR / "operations.json"
    assert settings.webhooks_config_path == CONFIG_DIR / "webhooks.json"


def test_operations_path_is_read_when_the_operations_config_is(
    fresh: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`get_operations_config` is the cache: clearing it alone reads the variable again."""
    from signalgen.config.operations import operations_config_path

    get_settings()
    fresh.setenv("OPERATIONS_CONFIG_PATH", str(tmp_path / "operations.json"))
    assert operations_config_path() == tmp_path / "operations.json"


def test_webhooks_path_comes_from_settings(fresh: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from signalgen.ingress.webhooks import default_config_path

    assert default_config_path() == CONFIG_DIR / "webhooks.json"
    fresh.setenv("WEBHOOKS_CONFIG_PATH", str(tmp_path / "hooks.json"))
    reset_settings()
    assert default_config_path() == tmp_path / "hooks.json"


def test_intake_batch_max_is_between_one_and_the_batch_cap(fresh: pytest.MonkeyPatch) -> None:
    from dispatcher.batching import MAX_BATCH

    assert Settings().intake_batch_max == 16
    assert Settings(INTAKE_BATCH_MAX=1).intake_batch_max == 1  # type: ignore[call-arg]
    assert Settings(INTAKE_BATCH_MAX=MAX_BATCH).intake_batch_max == MAX_BATCH  # type: ignore[call-arg]
    for bad in (0, MAX_BATCH + 1):
        with pytest.raises(ValidationError, match="INTAKE_BATCH_MAX"):
            Settings(INTAKE_BATCH_MAX=bad)  # type: ignore[call-arg]
