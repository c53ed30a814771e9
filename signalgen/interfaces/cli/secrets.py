"""`signalgen secrets rotate`: re-encrypt every stored webhook secret with the first key.

Rotation: put a new Fernet key first in SECRETS_KEYS and keep the old ones after it (every
process then encrypts with the new key and still decrypts the old tokens), restart the
services, run `signalgen secrets rotate`, then drop the old keys. Legacy secrets stored in
plain text (before encryption existed) are encrypted by the same command.
"""

from __future__ import annotations

from typing import Any

import click

from signalgen.crypto import SECRET_FIELD, SecretBox, SecretKeyError, default_box


@click.group()
def secrets() -> None:
    """Webhook executor secrets, encrypted at rest with SECRETS_KEYS."""


@secrets.command("rotate")
def rotate() -> None:
    """Re-encrypt every stored webhook secret with the first key of SECRETS_KEYS (and encrypt
    any still stored in plain text). All or nothing; prints the counts."""
    from signalgen.interfaces.cli import storage

    try:
        counts = rotate_secrets(storage.open_database(migrate=True))
    except SecretKeyError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{counts['total']} webhook secret(s) now encrypted with the first key: "
        f"{counts['rotated']} re-encrypted, {counts['encrypted']} were plain text"
    )


def rotate_secrets(db: Any, box: SecretBox | None = None) -> dict[str, int]:
    """Re-encrypt every stored webhook secret with the first key (legacy plain ones encrypted),
    in one transaction: a secret that no key decrypts raises `SecretKeyError` naming its
    pipeline, and nothing is changed. Returns counts: rotated, encrypted (were plain), total."""
    from sqlalchemy import select

    from signalgen.storage.models import Pipeline

    box = box or default_box()
    counts = {"rotated": 0, "encrypted": 0, "total": 0}
    with db.session() as session:
        rows = session.execute(select(Pipeline).order_by(Pipeline.id)).scalars().all()
        for row in rows:
            config = dict(row.executor_config or {})
            if SECRET_FIELD not in config:
                continue
            stored = config[SECRET_FIELD]
            try:
                config[SECRET_FIELD] = box.rotate(stored)
            except SecretKeyError as exc:
                raise SecretKeyError(f"pipeline {row.id}: {exc}; nothing rotated") from None
            counts["encrypted" if isinstance(stored, str) else "rotated"] += 1
            counts["total"] += 1
            row.executor_config = config
    return counts
