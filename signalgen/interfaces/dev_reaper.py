"""`signalgen dev`'s reaper and launcher: no child outlives its parent, whatever kills the parent.

Two mechanisms, because either alone leaves a gap:

- the launcher (`LAUNCHER`, run as `python -c LAUNCHER PARENT_PID PROGRAM ARGS...`) asks Linux
  to send the child SIGTERM when its parent dies (`prctl(PR_SET_PDEATHSIG)`, kept across the
  `execv` into the real program), so a worker starts its shutdown the moment the parent is gone;
- the reaper (`python -m signalgen.interfaces.dev_reaper WORKDIR`, in a session of its own) reads
the
  process-group ids of the children on its stdin, a pipe whose write end only the parent holds.
  End of file without `done` means the parent died (SIGKILL included): the reaper sends each
  group SIGTERM, SIGKILL after a grace period (a prefork worker's pool children are in its
  group), then removes the parent's temporary directory. After `done` (the parent stopped its
  children itself) it simply exits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

#: Linux's `PR_SET_PDEATHSIG` (prctl(2)).
PR_SET_PDEATHSIG = 1

#: `python -c LAUNCHER PARENT_PID PROGRAM ARGS...`: die with the parent, then become PROGRAM.
LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "parent = int(sys.argv[1])\n"
    "try:\n"
    "    libc = ctypes.CDLL(None, use_errno=True)\n"
    f"    libc.prctl({PR_SET_PDEATHSIG}, int(signal.SIGTERM), 0, 0, 0)\n"
    "except (OSError, AttributeError):\n"
    "    pass  # no prctl (not Linux): the reaper alone stops the child\n"
    "if os.getppid() != parent:\n"
    "    sys.exit(0)  # the parent died before the signal was armed\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)

#: How long a group has, after SIGTERM, before the reaper kills it.
GRACE_SECONDS = 8.0


def group_alive(pgid: int, proc: Path = Path("/proc")) -> bool:
    """Whether any process of group `pgid` is still running (zombies do not count)."""
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _signal_groups(groups: Iterable[int], signum: int) -> None:
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)


def reap(groups: set[int], workdir: Path | None, grace: float = GRACE_SECONDS) -> None:
    """Stop every group (SIGTERM, SIGKILL after `grace`), then remove `workdir`."""
    _signal_groups(groups, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(group_alive(g) for g in groups):
        time.sleep(0.1)
    left = {g for g in groups if group_alive(g)}
    _signal_groups(left, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(group_alive(g) for g in left):
        time.sleep(0.1)
    if workdir is not None:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str]) -> int:
    # Our own session already keeps a terminal's signals away; these make sure of it.
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    workdir = Path(argv[0]) if argv else None
    groups: set[int] = set()
    for line in sys.stdin:
        word, _, value = line.strip().partition(" ")
        if word == "done":
            return 0
        if word == "pgid" and value.isdigit():
            groups.add(int(value))
    reap(groups, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
