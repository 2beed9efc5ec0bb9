"""Atomic outputs: write to a temporary sibling, then rename, so a reader never sees a half-written result."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def atomic_dir(final: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `final`; on success it replaces `final` in one rename.

    On an exception the temporary folder is removed, so nothing half-written ever sits at `final`.
    An existing `final` is only replaced with `force=True`."""
    final = Path(final)
    check_not_exists(final, force=force)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    tmp.chmod(_DIR_MODE)
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_not_exists(path: Path, *, force: bool, what: str = "output") -> None:
    """Refuse to overwrite a finished result unless --force."""
    if Path(path).exists() and not force:
        raise UsageError(f"{path}: {what} already exists; pass --force to overwrite it or choose another --out")
