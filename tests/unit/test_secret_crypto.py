"""`signalgen.crypto`: webhook secrets encrypted with the first of SECRETS_KEYS, decrypted by any;
rotation; a wrong key or no key is an error naming SECRETS_KEYS; legacy plain secrets load; the
embedded default generates its key file once (0600); `signalgen secrets rotate` re-encrypts."""

from __future__ import annotations

import json
import re
import stat
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet

from dispatcher.admission import Refused
from dispatcher.store import add_pipeline, export_dict, get_pipeline, row_to_spec, spec_to_row
from schemas.pipeline import PipelineSpec
from signalgen import crypto
from signalgen.crypto import MissingSecretKeys, SecretBox, SecretKeyError
from signalgen.interfaces.cli import main
from signalgen.interfaces.cli.secrets import rotate_secrets
from signalgen.storage import Database
from signalgen.storage.models import Pipeline

SECRET = "whsec-0123456789-SECRET"
OLD, NEW = Fernet.generate_key(), Fernet.generate_key()


def webhook_spec(secret: str = SECRET) -> PipelineSpec:
    return PipelineSpec.model_validate(
        {
            "owner": "u",
            "name": "hook",
            "trigger_mode": "signal",
            "scanner": {"tickers": ["AAPL"]},
            "executor": {"kind": "webhook", "url": "http://127.0.0.1:9/h", "secret": secret},
        }
    )


def test_round_trip_and_the_stored_form_holds_no_plaintext() -> None:
    box = SecretBox((OLD,))
    stored = box.encrypt(SECRET)
    assert set(stored) == {"fernet"} and SECRET not in json.dumps(stored)
    assert box.decrypt(stored) == SECRET
    assert box.encrypt(SECRET) != stored  # a fresh IV every time
    config = box.seal_config({"url": "u", "secret": SECRET, "max_attempts": 2})
    assert (
        config["url"] == "u"
        and config["max_attempts"] == 2
        and crypto.is_encrypted(config["secret"])
    )
    assert box.open_config(config) == {"url": "u", "secret": SECRET, "max_attempts": 2}
    assert box.seal_config({"task": "t"}) == {"task": "t"}  # nothing to hide


def test_rotation_with_two_keys() -> None:
    old_box, both = SecretBox((OLD,)), SecretBox((NEW, OLD))
    stored = old_box.encrypt(SECRET)
    assert both.decrypt(stored) == SECRET  # old tokens still read after the new key is added
    rotated = both.rotate(stored)
    assert SecretBox((NEW,)).decrypt(rotated) == SECRET  # the old key can now go
    with pytest.raises(SecretKeyError):
        old_box.decrypt(rotated)
    assert SecretBox((NEW,)).decrypt(both.encrypt(SECRET)) == SECRET  # the first key encrypts


def test_wrong_key_and_malformed_tokens_name_secrets_keys_never_the_secret() -> None:
    stored = SecretBox((OLD,)).encrypt(SECRET)
    for bad in (stored, {"fernet": "not-a-token"}, {"fernet": "é"}):
        with pytest.raises(SecretKeyError, match="SECRETS_KEYS") as caught:
            SecretBox((NEW,)).decrypt(bad)
        assert SECRET not in str(caught.value)
    with pytest.raises(SecretKeyError, match="neither a Fernet token nor a string"):
        SecretBox((NEW,)).decrypt({"other": 1})


def test_legacy_plain_secrets_load_and_rotation_encrypts_them() -> None:
    box = SecretBox((NEW,))
    assert box.decrypt(SECRET) == SECRET
    assert box.open_config({"secret": SECRET}) == {"secret": SECRET}
    assert box.decrypt(box.rotate(SECRET)) == SECRET


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "SECRETS_KEYS is empty"),
        (" , ", "SECRETS_KEYS is empty"),
        (f"{NEW.decode()},short", "key 2 of 2 is not a Fernet key"),
        ("ünïcode", "key 1 of 1 is not a Fernet key"),
    ],
    ids=["empty", "blank", "second-short", "not-base64"],  # stable: NEW is random per process
)
def test_malformed_keys_are_refused_naming_the_position(text: str, message: str) -> None:
    with pytest.raises(SecretKeyError, match=message) as caught:
        SecretBox.from_text(text)
    assert "short" not in str(caught.value)  # the key itself is never echoed


def test_key_source_env_then_sqlite_key_file_else_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "state" / "secrets.key"
    from_env = SecretBox.from_settings(NEW.decode(), "postgresql://x/y", key_file=key_file)
    assert from_env.keys == (NEW,) and not key_file.exists()
    with pytest.raises(MissingSecretKeys, match="SECRETS_KEYS is not set"):
        SecretBox.from_settings(None, "postgresql+psycopg://x/y", key_file=key_file)
    with pytest.raises(MissingSecretKeys):
        SecretBox.from_settings("  ", "postgresql://x/y", key_file=key_file)
    embedded = SecretBox.from_settings(None, f"sqlite:///{tmp_path}/db", key_file=key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    again = SecretBox.from_settings(None, "sqlite://", key_file=key_file)
    assert again.keys == embedded.keys  # generated once, then reused
    assert again.decrypt(embedded.encrypt(SECRET)) == SECRET
    assert [p.name for p in key_file.parent.iterdir()] == ["secrets.key"]  # no temporary left
    key_file.write_text("garbage\n")
    with pytest.raises(SecretKeyError, match="does not hold a Fernet key; set SECRETS_KEYS"):
        SecretBox.from_settings(None, "sqlite://", key_file=key_file)


def test_processes_racing_to_create_the_key_file_agree(tmp_path: Path) -> None:
    key_file = tmp_path / "secrets.key"
    keys: list[bytes] = []
    barrier = threading.Barrier(8)

    def make() -> None:
        barrier.wait()
        keys.append(crypto.load_or_create_key_file(key_file))

    threads = [threading.Thread(target=make) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8 and len(set(keys)) == 1


# -- through the store -------------------------------------------------------------------------


def test_store_encrypts_on_write_and_decrypts_on_read(sqlite_db: Database) -> None:
    pipeline_id = add_pipeline(sqlite_db, webhook_spec(), redis_url="redis://127.0.0.1:1/0")
    row = get_pipeline(sqlite_db, pipeline_id)
    assert SECRET not in json.dumps(row.executor_config)
    assert crypto.is_encrypted(row.executor_config["secret"])
    spec = row_to_spec(row)
    assert spec.executor.kind == "webhook"
    assert spec.executor.secret.get_secret_value() == SECRET
    assert "secret" not in export_dict(spec)["executor"]
    assert export_dict(spec, include_secrets=True)["executor"]["secret"] == SECRET


def test_a_write_without_keys_on_postgresql_is_refused_naming_the_field(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing() -> SecretBox:
        return SecretBox.from_settings(None, "postgresql://db/x")

    monkeypatch.setattr(crypto, "default_box", missing)
    with pytest.raises(Refused) as caught:
        spec_to_row(webhook_spec())
    assert caught.value.field == "executor.secret" and "SECRETS_KEYS" in caught.value.reason
    record = PipelineSpec.model_validate(
        {"owner": "u", "name": "r", "trigger_mode": "signal", "scanner": {"tickers": ["AAPL"]}}
    )
    assert spec_to_row(record)["executor_config"] == {}  # no secret, no key needed


def test_secrets_rotate_command(sqlite_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    old_box = SecretBox((OLD,))
    monkeypatch.setattr(crypto, "default_box", lambda: old_box)
    first = add_pipeline(sqlite_db, webhook_spec(), redis_url="redis://127.0.0.1:1/0")
    with sqlite_db.session() as session:  # a row from before encryption: plain text
        session.add(
            Pipeline(
                **{
                    **spec_to_row(webhook_spec("legacy-plain-secret-SECRET")),
                    "name": "legacy",
                    "executor_config": {
                        "url": "http://127.0.0.1:9/h",
                        "secret": "legacy-plain-secret-SECRET",
                    },
                }
            )
        )
    both = SecretBox((NEW, OLD))
    monkeypatch.setattr(crypto, "default_box", lambda: both)
    monkeypatch.setattr("signalgen.interfaces.cli.secrets.default_box", lambda: both)
    monkeypatch.setattr("signalgen.interfaces.cli.storage.open_database", lambda **_: sqlite_db)
    result = CliRunner().invoke(main, ["secrets", "rotate"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (
        "2 webhook secret(s)" in result.output
        and "1 re-encrypted, 1 were plain text" in result.output
    )
    only_new = SecretBox((NEW,))
    with sqlite_db.session() as session:
        stored = {p.name: p.executor_config["secret"] for p in session.query(Pipeline)}
    assert only_new.decrypt(stored["hook"]) == SECRET
    assert only_new.decrypt(stored["legacy"]) == "legacy-plain-secret-SECRET"
    assert "SECRET" not in json.dumps(stored)
    # A key that decrypts nothing: refused, nothing changed, the pipeline named.
    monkeypatch.setattr("signalgen.interfaces.cli.secrets.default_box", lambda: SecretBox((OLD,)))
    result = CliRunner().invoke(main, ["secrets", "rotate"])
    assert (
        result.exit_code != 0
        and "SECRETS_KEYS" in result.output
        and "nothing rotated" in result.output
    )
    with sqlite_db.session() as session:
        assert {p.name: p.executor_config["secret"] for p in session.query(Pipeline)} == stored
    assert re.search(r"pipeline [0-9a-f-]{36}: ", result.output), result.output
    assert first in {p.id for p in get_pipelines(sqlite_db)}


def get_pipelines(db: Database) -> list[Pipeline]:
    with db.session() as session:
        return list(session.query(Pipeline))


def test_rotate_secrets_counts_nothing_without_webhooks(sqlite_db: Database) -> None:
    assert rotate_secrets(sqlite_db, SecretBox((NEW,))) == {
        "rotated": 0,
        "encrypted": 0,
        "total": 0,
    }


def test_cli_never_shows_the_secret_and_export_leaves_it_out_unless_asked(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("signalgen.interfaces.cli.storage.open_database", lambda **_: sqlite_db)
    monkeypatch.setattr("dispatcher.store.bump_version", lambda *a, **k: None)
    runner = CliRunner()
    pipeline_id = add_pipeline(sqlite_db, webhook_spec(), redis_url="redis://127.0.0.1:1/0")
    for args in (["show", str(pipeline_id)], ["list"], ["list", "--json"]):
        shown = runner.invoke(main, ["pipelines", *args], catch_exceptions=False)
        assert shown.exit_code == 0 and SECRET not in shown.output and "fernet" not in shown.output
    assert (
        json.loads(runner.invoke(main, ["pipelines", "show", str(pipeline_id)]).output)["executor"][
            "secret"
        ]
        == "***"
    )

    exported = runner.invoke(main, ["pipelines", "export"], catch_exceptions=False)
    assert SECRET not in exported.output and "fernet" not in exported.output
    assert "1 webhook secret(s) left out (--include-secrets" in exported.output
    [item] = json.loads(exported.stdout)
    assert "secret" not in item["executor"] and item["executor"]["url"] == "http://127.0.0.1:9/h"
    full = runner.invoke(main, ["pipelines", "export", "--include-secrets"])
    assert json.loads(full.stdout)[0]["executor"]["secret"] == SECRET

    # Importing the secret-less export back keeps the stored secret (changes applied).
    item["name"] = "renamed"
    path = tmp_path / "export.json"
    path.write_text(json.dumps([item]))
    imported = runner.invoke(main, ["pipelines", "import", str(path)], catch_exceptions=False)
    assert "0 created, 1 updated" in imported.output, imported.output
    row = get_pipeline(sqlite_db, pipeline_id)
    assert row.name == "renamed" and SECRET not in json.dumps(row.executor_config)
    assert row_to_spec(row).executor.secret.get_secret_value() == SECRET  # type: ignore[union-attr]

    # A new pipeline (unknown id) without a secret has nothing to keep: refused, field named.
    item["id"] = "7b0e1a4e-36a4-4c5e-9d6e-1f2a3b4c5d6e"
    path.write_text(json.dumps([item]))
    refused = runner.invoke(main, ["pipelines", "import", str(path)])
    assert refused.exit_code != 0 and "pipelines[0].executor.secret" in refused.output
    assert len(get_pipelines(sqlite_db)) == 1


# -- at delivery --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "database", ["sqlite_db", pytest.param("pg_db", marks=pytest.mark.integration)]
)
def test_a_wrong_key_fails_the_execution_naming_secrets_keys_and_the_right_one_delivers(
    database: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import UTC, datetime, timedelta
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from dispatcher import service
    from signalgen.storage.models import Execution

    db: Database = request.getfixturevalue(database)
    received: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    spec = PipelineSpec.model_validate(
        {
            "owner": "u",
            "name": "hourly-hook",
            "trigger_mode": "periodic",
            "schedule": {"interval_seconds": 3600},
            "executor": {
                "kind": "webhook",
                "url": f"http://127.0.0.1:{server.server_address[1]}/h",
                "secret": SECRET,
                "max_attempts": 1,
            },
        }
    )
    try:
        add_pipeline(db, spec, redis_url="redis://127.0.0.1:1/0")
        with db.session() as session:
            for pipeline in session.query(Pipeline):
                pipeline.created_at = datetime(2025, 1, 1, tzinfo=UTC)
        lease = timedelta(minutes=5)
        ids: list[int] = []

        def tick(hour: int) -> int:
            enqueued: list[tuple[int, float | None]] = []
            service.fire_periodic(
                db=db,
                enqueue=enqueued.extend,
                now=datetime(2025, 1, 2, hour, 1, tzinfo=UTC),
                lease=lease,
                claimed_grace=timedelta(days=1),
            )
            ids.append(enqueued[0][0])
            return enqueued[0][0]

        monkeypatch.setattr(crypto, "default_box", lambda: SecretBox((NEW,)))  # not the key used
        status = service.execute(tick(9), None, db=db, lease=lease)
        monkeypatch.undo()
        assert status == "failed" and received == []
        status = service.execute(tick(10), None, db=db, lease=lease)
        assert status == "succeeded" and len(received) == 1
        with db.session() as session:
            errors = {e.id: e.error for e in session.query(Execution)}
        assert "SECRETS_KEYS" in (errors[ids[0]] or "") and SECRET not in str(errors)
        assert errors[ids[1]] is None
    finally:
        server.shutdown()
        server.server_close()
