"""Atomic outputs: write to a temporary sibling, flush it to disk, then rename, so a reader never sees a
half-written result, even after a crash or power loss.

Replacing an existing folder swaps the two in one step where the system can (Linux `renameat2` with
RENAME_EXCHANGE): at every instant the path holds the old or the new folder. Elsewhere (or on a filesystem
without the exchange) the old folder is renamed aside to `.NAME.old` first; a crash in the moment between the
two renames leaves it there, and the next write of the same folder puts it back before doing anything else.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cramcli.utils import disk
from cramcli.utils.errors import UsageError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private (0600/0700) entries; results get the modes a plain open()/mkdir() would give.
_MASK = _umask()
_FILE_MODE, _DIR_MODE = 0o666 & ~_MASK, 0o777 & ~_MASK


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
        _fsync(path.parent)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise disk.named(exc, path) from None  # the result's path, not the temporary file's (or none)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def atomic_dir(final: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success its files and itself are fsynced and it replaces
    `final` (see the module docstring for how a replace never leaves the path empty).

    On an exception the temporary folder is removed, so nothing half-written ever sits at `final`.
    An existing `final` is only replaced with `force=True`."""
    final = Path(final)
    restore_aside(final)
    check_not_exists(final, force=force)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    tmp.chmod(_DIR_MODE)
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.exists():
            _replace_dir(tmp, final)
        else:
            tmp.rename(final)
        _fsync(final.parent)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _as_final(exc, tmp, final) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _as_final(exc: OSError, tmp: Path, final: Path) -> OSError:
    """A failed write inside the temporary folder, said of the path the file was meant for (the temporary
    folder is gone by the time anyone reads the message)."""
    if exc.filename is None or not Path(exc.filename).is_relative_to(tmp):
        return exc
    return OSError(exc.errno, exc.strerror, str(final / Path(exc.filename).relative_to(tmp)))


def partials(final: Path) -> list[Path]:
    """The work folders `atomic_dir` made for `final` (`.NAME.XXXXXXXX.partial`, whoever made them): what a
    killed writer leaves behind. mkdtemp's 8 random characters hold no dot, so the work folders of another
    output named `NAME.x` never match."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(final.name)}\.[a-z0-9_]{{8}}\.partial")
    return sorted(p for p in final.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir())


def restore_aside(final: Path) -> None:
    """Put back a folder left renamed aside (`.NAME.old`) by a replace that was cut off between its renames."""
    aside = final.with_name(f".{final.name}.old")
    if aside.is_dir() and not final.exists():
        aside.rename(final)
    shutil.rmtree(aside, ignore_errors=True)


def _replace_dir(new: Path, final: Path) -> None:
    """Swap `new` into `final` and delete the old folder."""
    if _exchange(new, final):
        shutil.rmtree(new, ignore_errors=True)  # `new` now holds the old folder
        return
    aside = final.with_name(f".{final.name}.old")
    final.rename(aside)
    new.rename(final)
    shutil.rmtree(aside, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    renameat2 = getattr(_LIBC, "renameat2", None) if _LIBC is not None else None
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # kernel or filesystem without the exchange
        return False
    raise OSError(code, os.strerror(code), str(b))


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except (OSError, TypeError):  # no C library to open this way (Windows)
        return None


_LIBC = _load_libc()


def _fsync(path: Path) -> None:
    """Flush a file or folder entry to disk (folders: where the OS allows opening them)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EBADF):  # folders cannot be fsynced on every system
            raise
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            _fsync(Path(root) / name)
        _fsync(Path(root))


def check_not_exists(path: Path, *, force: bool, what: str = "output") -> None:
    """Refuse to overwrite a finished result unless --force."""
    if Path(path).exists() and not force:
        raise UsageError(f"{path}: {what} already exists; pass --force to overwrite it or choose another --out")
