"""API users and keys: creation, hashing, lookup. No HTTP here (see
`signalgen.interfaces.http.deps`).

A key is `sg_` + 32 random bytes (urlsafe base64). Only its SHA-256 is stored: with that much
entropy a plain hash is as strong as a slow one, and lookup stays one index probe per request.
The key is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from schemas.api import USER_NAME_PATTERN
from signalgen.storage.models import ApiKey, User

KEY_PREFIX = "sg_"
_SHOWN_PREFIX_LENGTH = 10


class UserExists(ValueError):
    pass


class UnknownUser(LookupError):
    pass


class UnknownKey(LookupError):
    pass


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user's name (what `pipelines.owner` holds), admin or not, and key."""

    user: str
    is_admin: bool
    key_id: uuid.UUID


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def add_user(session: Session, name: str, *, is_admin: bool = False) -> User:
    """Add a user; its name (letters, digits, `_ . @ -`, at most 64) owns its pipelines."""
    if not re.fullmatch(USER_NAME_PATTERN, name):
        raise ValueError(f"user name {name!r} must match {USER_NAME_PATTERN}")
    if session.execute(select(User.id).where(User.name == name)).first() is not None:
        raise UserExists(f"user {name!r} exists")
    user = User(id=uuid.uuid4(), name=name, is_admin=is_admin, created_at=datetime.now(UTC))
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        raise UserExists(f"user {name!r} exists") from None
    return user


def list_users(session: Session) -> list[User]:
    return list(session.execute(select(User).order_by(User.name)).scalars())


def create_key(session: Session, user_name: str, *, label: str = "") -> tuple[ApiKey, str]:
    """A new key for `user_name`: (the stored row, the key itself, which is not stored)."""
    user = session.execute(select(User).where(User.name == user_name)).scalar_one_or_none()
    if user is None:
        raise UnknownUser(f"no user named {user_name!r} (add one with `signalgen users add`)")
    key = new_key()
    row = ApiKey(
        id=uuid.uuid4(),
        user_id=user.id,
        key_hash=hash_key(key),
        prefix=key[:_SHOWN_PREFIX_LENGTH],
        label=label,
        created_at=datetime.now(UTC),
    )
    session.add(row)
    session.flush()
    return row, key


def list_keys(session: Session, user_name: str | None = None) -> list[tuple[ApiKey, str]]:
    statement = (
        select(ApiKey, User.name)
        .join(User, User.id == ApiKey.user_id)
        .order_by(User.name, ApiKey.created_at)
    )
    if user_name is not None:
        statement = statement.where(User.name == user_name)
    return [(key, name) for key, name in session.execute(statement).tuples()]


def revoke_key(session: Session, key_id: uuid.UUID) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None:
        raise UnknownKey(f"no API key with id {key_id}")
    if row.revoked_at is None:
        row.revoked_at = datetime.now(UTC)
    return row


def key_digest(key: str) -> str | None:
    """The stored form (SHA-256 hex) of a well-formed key; None for one that cannot be ours."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    return hash_key(key)


def principal_for_digest(session: Session | Connection, digest: str) -> Principal | None:
    """The principal of the live key with this digest, or None (unknown or revoked)."""
    row = session.execute(
        select(ApiKey.id, ApiKey.key_hash, User.name, User.is_admin)
        .join(User, User.id == ApiKey.user_id)
        .where(ApiKey.key_hash == digest, ApiKey.revoked_at.is_(None))
    ).first()
    # The index found the row by hash; compare anyway in constant time so no code path
    # ever branches on a partial match.
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        return None
    return Principal(user=row.name, is_admin=row.is_admin, key_id=row.id)


def authenticate(session: Session, key: str) -> Principal | None:
    """The principal of a live key, or None (unknown, revoked, or malformed)."""
    digest = key_digest(key)
    return None if digest is None else principal_for_digest(session, digest)
