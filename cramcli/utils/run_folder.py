"""The one policy for folders cram writes results into: a marker says cram made it, a lock says who writes it.

- Every folder a stage creates gets `.cram-folder.json` (the command, the settings' fingerprint, when).
- `--force` replaces only a folder that carries that marker; a non-empty folder without it is someone else's
  and is refused, untouched, whatever the flags.
- A second process that wants to write a folder another cram process is writing gets a one-line error naming
  the holder (a `filelock` lock held for the whole stage: released by the OS when the holder dies).
- "Reuse when finished with the same settings" compares `fingerprint(settings)`, the same rule everywhere.
- Ownership is checked again once the lock is held (the first check only keeps lock files out of folders that
  are not cram's), so two processes racing for one folder cannot both pass it.
- A result written whole is built in a hidden `.NAME.XXXXXXXX.partial` work folder that names its owner (pid,
  host). Under the lock, work folders of earlier runs are deleted only when their owner is certainly dead: the
  same host and no such process. A live process of another user (EPERM), another host, or a work folder whose
  owner is not written yet are left alone.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from cramcli.utils import atomic
from cramcli.utils.atomic import atomic_dir, write_json
from cramcli.utils.errors import UsageError
from cramcli.utils.jsonfile import read_object_or_none

MARKER = ".cram-folder.json"
LOCK = ".cram.lock"
HOLDER = ".cram.lock.json"
OWNER = ".cram-owner.json"


def fingerprint(settings: Any) -> str:
    """Short stable hash of JSON-able settings (key order does not matter)."""
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_marker(folder: Path) -> dict[str, Any] | None:
    return read_object_or_none(Path(folder) / MARKER)


def write_marker(folder: Path, command: str, settings_fingerprint: str) -> None:
    write_json(Path(folder) / MARKER, {"command": command, "fingerprint": settings_fingerprint,
                                       "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


@contextlib.contextmanager
def open_folder(folder: Path, *, command: str, settings_fingerprint: str, force: bool = False,
                flag: str = "--out") -> Iterator[dict[str, Any] | None]:
    """Own `folder` for `command` while the block runs: refuse it when it is not cram's, lock it, and on `force`
    empty it. Yields the marker of the work already there (None for a new or emptied folder): whether to resume,
    reuse or refuse that work is the stage's decision."""
    folder = Path(folder)
    check_owner(folder, command, flag)
    with locked(folder, command):
        existing = check_owner(folder, command, flag)
        if existing is not None and force:
            _empty(folder)
            existing = None
        if existing is None:
            write_marker(folder, command, settings_fingerprint)
        yield existing


def check_owner(folder: Path, command: str, flag: str = "--out") -> dict[str, Any] | None:
    """The marker of a folder `command` made earlier; None for a missing or empty one. Refuses (changing
    nothing) a file, a non-empty folder without the marker, and a folder another command made."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{flag} {folder}: is a file; pass a folder path")
    if not folder.is_dir() or not any(p.name not in (LOCK, HOLDER) for p in folder.iterdir()):
        return None
    marker = read_marker(folder)
    if marker is None:
        raise UsageError(f"{flag} {folder}: holds files cram did not create (no {MARKER}); nothing was changed — "
                         f"choose another {flag} or empty the folder yourself")
    if marker.get("command") != command:
        raise UsageError(f"{flag} {folder}: holds the output of `cram {marker.get('command')}`, not of "
                         f"`cram {command}`; choose another {flag}")
    return marker


def _empty(folder: Path) -> None:
    """Remove what is inside a folder cram made (never the lock another holder may be waiting on)."""
    for entry in folder.iterdir():
        if entry.name in (LOCK, HOLDER):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


@contextlib.contextmanager
def atomic_output(folder: Path, *, command: str, settings_fingerprint: str, force: bool = False,
                  flag: str = "--out") -> Iterator[Path]:
    """For a result written whole: yields a temporary folder beside `folder` (marker already inside) that
    replaces `folder` in one rename when the block succeeds. An existing result of `command` is replaced only
    with `force`; a foreign folder never. The lock sits beside the folder, since the folder itself is swapped."""
    folder = Path(folder)
    check_owner(folder, command, flag)
    with locked(folder, command, beside=True):
        if check_owner(folder, command, flag) is not None and not force:
            raise UsageError(f"{flag} {folder}: already exists; pass --force to replace it or choose another {flag}")
        remove_dead_partials(folder)
        with atomic_dir(folder, force=True) as tmp:
            write_json(tmp / OWNER, {"pid": os.getpid(), "host": socket.gethostname()})
            write_marker(tmp, command, settings_fingerprint)
            yield tmp
            (tmp / OWNER).unlink()


def remove_dead_partials(folder: Path) -> list[Path]:
    """Delete the work folders that killed runs of `folder` left behind (see the module docstring for when a
    run counts as dead). Call with the folder's lock held. Returns what was deleted."""
    removed = [p for p in atomic.partials(folder) if _owner_dead(p)]
    for partial in removed:
        shutil.rmtree(partial, ignore_errors=True)
    return removed


def _owner_dead(partial: Path) -> bool:
    try:
        owner = json.loads((partial / OWNER).read_text())
        pid, host = int(owner["pid"]), str(owner["host"])
    except (OSError, ValueError, KeyError, TypeError):
        return False  # not written yet (or not ours to judge)
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.ESRCH  # EPERM: alive, another user's
    return False


@contextlib.contextmanager
def locked(folder: Path, command: str, *, beside: bool = False) -> Iterator[None]:
    """Hold the folder's lock for the duration; a second writer fails at once with the holder's pid and host.
    The lock lives in the folder, or `beside` it (`.NAME.cram.lock`) for a folder that is swapped whole."""
    folder = Path(folder)
    where, prefix = (folder.parent, f".{folder.name}") if beside else (folder, "")
    where.mkdir(parents=True, exist_ok=True)
    lock_file, holder_file = where / f"{prefix}{LOCK}", where / f"{prefix}{HOLDER}"
    lock = FileLock(str(lock_file), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise UsageError(f"{folder}: in use by {_holder(holder_file)}; wait for it to finish (or stop it), or "
                         f"choose another --out") from None
    try:
        write_json(holder_file, {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        yield
    finally:
        holder_file.unlink(missing_ok=True)
        lock.release()  # the empty lock file stays: deleting it would let two processes lock two inodes


def _holder(holder_file: Path) -> str:
    try:
        h = json.loads(holder_file.read_text())
        return f"`cram {h['command']}` (pid {h['pid']} on {h['host']}, since {h['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another cram process"
