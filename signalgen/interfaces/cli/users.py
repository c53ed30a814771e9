"""`signalgen users` and `signalgen keys`: API users and their keys (stored hashed)."""

from __future__ import annotations

import uuid

import click

from signalgen.interfaces.cli import storage


@click.group()
def users() -> None:
    """API users (a user's name is the `owner` of its pipelines)."""


@users.command("add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="An admin's keys see every user's objects.")
@click.option("--no-key", is_flag=True, help="Do not create a first API key.")
def users_add(name: str, admin: bool, no_key: bool) -> None:
    """Add user NAME and print its first API key (shown once)."""
    from signalgen.interfaces.http.auth import UserExists, add_user, create_key

    with storage.open_database(migrate=True).session() as session:
        try:
            add_user(session, name, is_admin=admin)
        except (UserExists, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
        key = None if no_key else create_key(session, name, label="first key")
    click.echo(f"added {'admin ' if admin else ''}user {name}")
    if key is not None:
        row, secret = key
        click.echo(f"API key {row.id} (store it now, it is not shown again):\n{secret}")


@users.command("list")
def users_list() -> None:
    """List users."""
    from signalgen.interfaces.http.auth import list_users

    with storage.open_database(migrate=False).session() as session:
        for user in list_users(session):
            click.echo(
                f"{user.name:<32} {'admin' if user.is_admin else 'user':<6} "
                f"{user.created_at:%Y-%m-%d %H:%M}"
            )


@click.group()
def keys() -> None:
    """API keys: create, list, revoke."""


@keys.command("create")
@click.argument("user")
@click.option("--label", default="", help="What the key is for.")
def keys_create(user: str, label: str) -> None:
    """Create an API key for USER and print it (shown once)."""
    from signalgen.interfaces.http.auth import UnknownUser, create_key

    with storage.open_database(migrate=True).session() as session:
        try:
            row, secret = create_key(session, user, label=label)
        except UnknownUser as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"API key {row.id} for {user} (store it now, it is not shown again):\n{secret}")


@keys.command("list")
@click.option("--user", help="Only this user's keys.")
def keys_list(user: str | None) -> None:
    """List keys: id, user, prefix, label, created, revoked. Never the keys themselves."""
    from signalgen.interfaces.http.auth import list_keys

    with storage.open_database(migrate=False).session() as session:
        rows = list_keys(session, user)
    for row, name in rows:
        revoked = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "active"
        click.echo(
            f"{row.id}  {name:<24} {row.prefix}…  {row.created_at:%Y-%m-%d %H:%M}  "
            f"{revoked:<24} {row.label}"
        )


@keys.command("revoke")
@click.argument("key_id", type=click.UUID)
def keys_revoke(key_id: uuid.UUID) -> None:
    """Revoke key KEY_ID (from `signalgen keys list`); requests with it get 401 at once."""
    from signalgen.interfaces.http.auth import UnknownKey, revoke_key

    with storage.open_database(migrate=True).session() as session:
        try:
            revoke_key(session, key_id)
        except UnknownKey as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"revoked {key_id}")
