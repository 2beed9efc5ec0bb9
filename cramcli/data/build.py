"""Building a prepared-data folder safely: reuse a finished folder with the same content hash, else build in a
hidden `.NAME.XXXXXXXX.partial` work folder beside the output that is renamed into place only when everything is
written (manifest.json last), so an interrupted run never leaves a folder that looks finished; the next run
removes the leftovers of killed ones (`utils/run_folder.remove_dead_partials` says when a work folder counts as
dead). SIGTERM unwinds like Ctrl-C, so the work folder is cleaned up. A failed write (a full disk, a file-size
limit) is one line naming the output and saying what is intact."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cramcli.data.prepared import MANIFEST, read_manifest, write_manifest
from cramcli.utils import disk, run_folder
from cramcli.utils.errors import UsageError


def cached_manifest(final: Path, chash: str, force: bool) -> dict[str, Any] | None:
    """The finished manifest at `final` if it matches; refuse to replace a different result without --force, and
    a folder cram did not make at all."""
    if run_folder.check_owner(final, "prepare-data") is None:
        return None
    if (final / MANIFEST).is_file():
        manifest = read_manifest(final) or {}
        if manifest.get("content_hash") == chash and not force:
            return manifest
        if not force:
            raise UsageError(
                f"{final}: holds prepared data for other settings (content hash {manifest.get('content_hash')},"
                f" this command's is {chash}); pass --force to rebuild it there or choose another --out"
            )
    elif not force:
        raise UsageError(f"{final}: an unfinished prepared-data folder; pass --force to rebuild it or choose another "
                         f"--out")
    return None


def build_folder(final: Path, chash: str, build: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Run `build(work)` (it fills the work folder and returns the manifest), then write the manifest and rename
    the work folder to `final`; returns the manifest."""
    try:
        with _sigterm_as_interrupt(), run_folder.atomic_output(final, command="prepare-data",
                                                               settings_fingerprint=chash, force=True) as work:
            manifest = build(work)
            # manifest.json marks the folder finished: written last, inside the folder that is renamed into place.
            write_manifest(work, manifest)
    except OSError as exc:
        if not disk.is_write_error(exc):
            raise
        before = f"the earlier prepared data in {final} is unchanged" if final.is_dir() else "nothing was kept"
        raise disk.write_failure(exc, exc.filename or final, intact=f"{before} (the work folder was removed); free "
                                 "space and run the same command again") from None
    return manifest


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the work folder is cleaned up instead of left behind."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. inside some test runners): keep the default
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
