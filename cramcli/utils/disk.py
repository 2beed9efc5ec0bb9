"""Write failures in words, and the free-space check before a large write.

A full disk looks different to each writer: Python raises `OSError(ENOSPC)`, a `ulimit -f` gives `EFBIG`,
safetensors and tokenizers put the errno in their own error text, and torch.save only says "unexpected pos".
Those writers run inside `os_errors` or write through `RecordingFile`, so the errno reaches `write_failure`, which
makes the one line people see: the path, the errno in words, the bytes needed where known, and what is intact.
"""

from __future__ import annotations

import errno
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cramcli.utils.errors import RunError

_WORDS = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "file too large (a file-size limit, `ulimit -f`, was reached)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
# Newer Rust writers say "(os error 28)"; safetensors 0.4 says "IoError(Os { code: 28, ... })".
_OS_ERROR = re.compile(r"os error (\d+)|Os \{ code: (\d+)")


def is_write_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _WORDS


def as_os_error(exc: BaseException, path: Path | str | None = None) -> OSError | None:
    """The OSError behind a library's write failure (safetensors says "(os error 28)"), else None."""
    if isinstance(exc, OSError):
        return exc
    match = _OS_ERROR.search(str(exc))
    if match is None:
        return None
    code = int(match.group(1) or match.group(2))
    return OSError(code, _WORDS.get(code, str(exc)), None if path is None else str(path))


def named(exc: OSError, path: Path | str) -> OSError:
    """`exc` with the path it concerns: a write through an open file raises an OSError without one."""
    return exc if exc.filename else OSError(exc.errno, exc.strerror, str(path))


@contextmanager
def os_errors(path: Path | str) -> Iterator[None]:
    """Inside the block, a Rust-backed writer's failure ("... (os error 28)": tokenizers, safetensors) becomes the
    OSError it stands for, naming `path`; everything else passes through unchanged."""
    try:
        yield
    except OSError:
        raise
    except Exception as exc:
        os_error = as_os_error(exc, path)
        if os_error is None:
            raise
        raise os_error from None


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def free_bytes(path: Path) -> int | None:
    """Free bytes on the filesystem of `path` (or of its nearest existing parent); None when unknown."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def low_space_warning(path: Path, needed: int, what: str) -> str | None:
    """A warning when `needed` bytes will not fit beside `path` (checked before checkpoints, exports, shards)."""
    free = free_bytes(path)
    if free is None or free >= needed:
        return None
    return f"{path}: {what} needs about {human(needed)} but only {human(free)} is free; the write will likely fail"


def write_failure(exc: OSError, path: Path | str | None = None, *, needed: int | None = None,
                  intact: str | None = None) -> RunError:
    """The one-line error for a failed write: `PATH: cannot write: WHY; N needed, M free; WHAT IS INTACT`.
    `path` names what was being written (rather than the hidden temporary file the errno came from)."""
    where = path or exc.filename
    why = _WORDS.get(exc.errno or 0, exc.strerror or str(exc))
    sizes = []
    if needed:
        sizes.append(f"about {human(needed)} needed")
    free = free_bytes(Path(exc.filename or path or ".")) if exc.errno in (errno.ENOSPC, errno.EDQUOT) else None
    if free is not None:
        sizes.append(f"{human(free)} free")
    line = (f"{where}: " if where else "") + f"cannot write: {why}" + (f"; {', '.join(sizes)}" if sizes else "")
    return RunError(line + (f"; {intact}" if intact else ""))


class RecordingFile:
    """A binary file that remembers the OSError of a failed write: torch.save reports one only as
    "unexpected pos", so the caller re-raises `error` instead."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._handle: Any = open(self.path, "wb", buffering=0)  # noqa: SIM115 (closed in close())
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        view, done = memoryview(data).cast("B"), 0
        try:
            while done < len(view):  # an unbuffered write may stop short at the limit; the next one says why
                done += self._handle.write(view[done:])
            return done
        except OSError as exc:
            self.error = named(exc, self.path)
            raise

    def flush(self) -> None:
        self._handle.flush()

    def fileno(self) -> int:
        return self._handle.fileno()

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> RecordingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
