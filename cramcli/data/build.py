"""Building a prepared-data folder safely: reuse a finished folder with the same content hash, else build in a
hidden `.NAME.*.partial` work folder beside the output that is renamed into place only when everything is written
(manifest.json last), so an interrupted run never leaves a folder that looks finished; the next run removes the
dead leftovers of killed ones. SIGTERM unwinds like Ctrl-C, so the work folder is cleaned up."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cramcli.data.prepared import MANIFEST, read_manifest, write_manifest
from cramcli.utils import run_folder
from cramcli.utils.errors import UsageError

OWNER = ".owner_pid"


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
    _remove_dead_partials(final)
    with _sigterm_as_interrupt(), run_folder.atomic_output(final, command="prepare-data", settings_fingerprint=chash,
                                                           force=True) as work:
        (work / OWNER).write_text(str(os.getpid()))
        manifest = build(work)
        (work / OWNER).unlink()
        # manifest.json marks the folder finished: written last, inside the folder that is renamed into place.
        write_manifest(work, manifest)
    return manifest


def _remove_dead_partials(final: Path) -> None:
    """Delete work folders of earlier runs of this output that were killed (their owner process is gone)."""
    if not final.parent.is_dir():
        return
    for partial in final.parent.glob(f".{final.name}.*.partial"):
        try:
            pid = int((partial / OWNER).read_text())
            os.kill(pid, 0)
            continue  # still running: another prepare-data owns it
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            pass  # no readable owner: killed before it was written
        shutil.rmtree(partial, ignore_errors=True)


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
