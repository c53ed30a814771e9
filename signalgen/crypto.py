"""Webhook executor secrets, encrypted at rest with the operator's Fernet keys.

`pipelines.executor_config.secret` holds `{"fernet": "<token>"}`: a Fernet token (AES-128-CBC +
HMAC-SHA256, with its time) of the secret, made with the first key of `SECRETS_KEYS`. Any key of
the list decrypts, so rotation is: put a new key first, keep the old ones after it, run
`signalgen secrets rotate` (re-encrypts every stored secret with the first key), then drop the
old keys. A plain string there is a secret stored before encryption (a legacy row): it still
loads, and `signalgen secrets rotate` encrypts it. The dict form never collides with a secret a
user chose, which is always a string.

Where the keys come from (`SecretBox.from_settings`):
- `SECRETS_KEYS` (comma-separated url-safe base64 Fernet keys, newest first), whatever the
  database;
- unset, on the embedded default (a SQLite database, `signalgen dev`): a key generated once in
  `.signalgen/secrets.key` (mode 0600), beside the default database;
- unset on any other database (PostgreSQL): `MissingSecretKeys`; a webhook pipeline write is then
  refused naming `executor.secret`. A secret is never stored in plain text.

`SecretBox` is pure (keys in, tokens out); the file and the settings are read at the edge, by
`SecretBox.from_settings` / `default_box()`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from signalgen.paths import PROJECT_ROOT

#: Where the embedded default keeps its generated key.
DEFAULT_KEY_FILE = PROJECT_ROOT / ".signalgen" / "secrets.key"
#: The key of the encrypted form in `executor_config.secret`.
FERNET_FIELD = "fernet"
SECRET_FIELD = "secret"  # noqa: S105  (a field name)


class SecretKeyError(RuntimeError):
    """The secret keys are missing, malformed, or do not decrypt a stored secret. The message
    names `SECRETS_KEYS` and never holds a key or a secret."""


class MissingSecretKeys(SecretKeyError):
    """No `SECRETS_KEYS` on a database other than the embedded SQLite default."""


def parse_keys(text: str) -> list[bytes]:
    """The Fernet keys of a `SECRETS_KEYS` value (comma-separated, blanks ignored)."""
    keys = [item.strip() for item in text.split(",") if item.strip()]
    if not keys:
        raise SecretKeyError("SECRETS_KEYS is empty: give at least one Fernet key")
    out: list[bytes] = []
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise SecretKeyError(
                f"SECRETS_KEYS: key {position} of {len(keys)} is not a Fernet key (32 url-safe "
                "base64-encoded bytes; make one with `python -c 'from cryptography.fernet import "
                "Fernet; print(Fernet.generate_key().decode())'`)"
            ) from None
        out.append(key.encode("ascii"))
    return out


_UNDECRYPTABLE = (
    "stored webhook secret cannot be decrypted with any key of SECRETS_KEYS (was the key that "
    "encrypted it removed or changed?)"
)


def is_encrypted(stored: object) -> bool:
    return isinstance(stored, Mapping) and isinstance(stored.get(FERNET_FIELD), str)


def _token(stored: object) -> bytes:
    if not isinstance(stored, Mapping) or not isinstance(stored.get(FERNET_FIELD), str):
        raise SecretKeyError("stored webhook secret is neither a Fernet token nor a string")
    try:
        return str(stored[FERNET_FIELD]).encode("ascii")
    except UnicodeEncodeError:
        raise SecretKeyError(_UNDECRYPTABLE) from None


@dataclass(frozen=True)
class SecretBox:
    """Encrypts with the first key, decrypts with any (MultiFernet)."""

    keys: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise SecretKeyError("SECRETS_KEYS is empty: give at least one Fernet key")

    @functools.cached_property
    def _fernet(self) -> MultiFernet:
        return MultiFernet([Fernet(key) for key in self.keys])

    @classmethod
    def from_text(cls, text: str) -> SecretBox:
        return cls(tuple(parse_keys(text)))

    def encrypt(self, secret: str) -> dict[str, str]:
        """The stored form of `secret`: `{"fernet": "<token>"}`."""
        token = self._fernet.encrypt(secret.encode("utf-8"))
        return {FERNET_FIELD: token.decode("ascii")}

    def decrypt(self, stored: object) -> str:
        """The secret in its stored form: encrypted, or a legacy plain string."""
        if isinstance(stored, str):
            return stored
        try:
            return self._fernet.decrypt(_token(stored)).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SecretKeyError(_UNDECRYPTABLE) from None

    def rotate(self, stored: object) -> dict[str, str]:
        """The stored form re-encrypted with the first key (a legacy plain string encrypted)."""
        if isinstance(stored, str):
            return self.encrypt(stored)
        try:
            token = self._fernet.rotate(_token(stored))
        except InvalidToken:
            raise SecretKeyError(_UNDECRYPTABLE) from None
        return {FERNET_FIELD: token.decode("ascii")}

    # -- executor_config ------------------------------------------------------------------------

    def seal_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """`config` with a plain `secret` replaced by its encrypted form."""
        out = dict(config)
        if isinstance(out.get(SECRET_FIELD), str):
            out[SECRET_FIELD] = self.encrypt(out[SECRET_FIELD])
        return out

    def open_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """`config` with its `secret` in plain text (what `WebhookExecutor` validates)."""
        out = dict(config)
        if SECRET_FIELD in out and not isinstance(out[SECRET_FIELD], str):
            out[SECRET_FIELD] = self.decrypt(out[SECRET_FIELD])
        return out

    @classmethod
    def from_settings(
        cls, keys_text: str | None, database_url: str, *, key_file: Path = DEFAULT_KEY_FILE
    ) -> SecretBox:
        """The box for this process's configuration (see the module's docstring)."""
        if keys_text is not None and keys_text.strip():
            return cls.from_text(keys_text)
        if database_url.startswith("sqlite"):
            return cls((load_or_create_key_file(key_file),))
        raise MissingSecretKeys(
            "SECRETS_KEYS is not set: webhook secrets are encrypted at rest and this database "
            "is not the embedded SQLite default, so the operator must set SECRETS_KEYS (one or "
            "more Fernet keys, comma-separated, newest first)"
        )


def load_or_create_key_file(path: Path) -> bytes:
    """The key in `path`, created once (0600) if absent. Two processes starting together get
    the same key: the file appears whole (a hard link of a finished temporary file) or not at
    all."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".secrets-key-")  # 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(Fernet.generate_key() + b"\n")
            with contextlib.suppress(FileExistsError):  # another process made it first
                os.link(temporary, path)
        finally:
            os.unlink(temporary)
    text = path.read_text(encoding="ascii").strip()
    try:
        return parse_keys(text)[0]
    except SecretKeyError:
        raise SecretKeyError(
            f"{path} does not hold a Fernet key; set SECRETS_KEYS or remove the file (the "
            "secrets it encrypted are then lost)"
        ) from None


def default_box() -> SecretBox:
    """The box of this process (settings read once; the key file read once)."""
    from signalgen.settings import get_settings

    settings = get_settings()
    keys = settings.secrets_keys.get_secret_value() if settings.secrets_keys else None
    return _box(keys, settings.database_url)


@functools.lru_cache(maxsize=8)
def _box(keys_text: str | None, database_url: str) -> SecretBox:
    return SecretBox.from_settings(keys_text, database_url)
