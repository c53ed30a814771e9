"""The pipelines change log: which pipelines each version of the index counter changed (pure).

Every pipeline write bumps the version counter in Redis and, in the same atomic step, records
the ids it changed under the new version (`dispatcher.store.bump_version`). A worker whose index
is at version `a` and sees `b` asks for the entries of versions a+1..b: when every one of them
is there, it reloads only those pipelines; when any is missing (trimmed from the log, Redis
flushed, a bump made by hand or by an older release without a log), or one says "everything"
(a write of more than `MAX_IDS_PER_ENTRY` pipelines), it rebuilds from the database.

An entry is a sorted-set member `"<version>:<hex id>,<hex id>,..."` (or `"<version>:*"`) scored
by its version: the version prefix makes each member unique.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable

#: Versions kept in the log; a worker further behind than this rebuilds from the database.
LOG_LENGTH = 5000
#: A write changing more pipelines than this logs "everything" (workers rebuild): bounds the
#: log's memory (at most LOG_LENGTH x ~3.3 KB) and a patch's cost.
MAX_IDS_PER_ENTRY = 100
EVERYTHING = "*"


def encode(ids: Collection[uuid.UUID] | None) -> str:
    """The payload of a log entry for a write that changed `ids` (None: unknown, everything)."""
    if ids is None or len(ids) > MAX_IDS_PER_ENTRY:
        return EVERYTHING
    return ",".join(sorted(pipeline_id.hex for pipeline_id in ids))


def covered_ids(
    entries: Iterable[tuple[bytes | str, float]], after: int, upto: int
) -> set[uuid.UUID] | None:
    """The ids changed by versions after+1..upto, from the log's `(member, score)` entries; None
    unless every one of those versions has an entry and none says "everything"."""
    if upto <= after:
        return None
    seen: set[int] = set()
    ids: set[uuid.UUID] = set()
    for member, score in entries:
        text = member.decode() if isinstance(member, bytes) else member
        prefix, _, payload = text.partition(":")
        try:
            version = int(prefix)
        except ValueError:
            return None
        if version != int(score) or not after < version <= upto:
            continue
        if payload == EVERYTHING:
            return None
        seen.add(version)
        try:
            ids.update(uuid.UUID(hex=item) for item in payload.split(",") if item)
        except ValueError:
            return None
    if len(seen) != upto - after:
        return None
    return ids
