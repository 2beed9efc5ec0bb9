"""Resumable training states: `RUN/checkpoints/step_XXXXXXXX/state.pt`, written atomically, the last K kept.

A state is one dict with an entry per trainer part (the model step, schedule clock, data cursor, RNG, metrics);
`Checkpointer` gathers them on save and hands each part its own entry back on resume. It holds only tensors and
plain Python values (the NumPy generator's state is stored as a tensor), so it loads with
`torch.load(weights_only=True)`: a state file that would need to run code to load is refused, never executed.
"""

from __future__ import annotations

import pickle
import random
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from cramcli.utils import disk
from cramcli.utils.atomic import atomic_dir, partials, restore_aside
from cramcli.utils.errors import UsageError

STATE_FORMAT = "cram-train-state/3"


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class RngState:
    """The torch, NumPy, Python (and CUDA) generators as a trainer part."""

    def state_dict(self) -> dict[str, Any]:
        return rng_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_rng_state(state)


class Checkpointer:
    """Saves every part's state as one checkpoint; restores the newest readable one into the parts.
    `config_key` is what a resume must match (budget, arch, data, world size)."""

    def __init__(self, run_dir: Path, parts: dict[str, Stateful], *, config_key: str, keep: int) -> None:
        self.run_dir, self.parts, self.config_key, self.keep = Path(run_dir), parts, config_key, keep

    def save(self, micro_steps: int, warn: Callable[[str], object] = print) -> Path:
        """Write the state of every part; a failed write is a RunError naming the newest intact checkpoint."""
        state = {"format": STATE_FORMAT, "config_key": self.config_key,
                 **{name: part.state_dict() for name, part in self.parts.items()}}
        return save_state(self.run_dir, micro_steps, state, self.keep, warn)

    def restore(self, warn: Callable[[str], object]) -> Path:
        """Load the newest readable state into the parts. ValueError (with the fix) when there is none or it
        belongs to other settings. Work folders of checkpoints and exports a killed session left are removed
        first (the run folder is locked: no live writer owns them), and a `final/` left aside is put back."""
        root = self.run_dir / "checkpoints"
        for partial in (*root.glob(".step_*.partial"), *partials(self.run_dir / "final")):
            shutil.rmtree(partial, ignore_errors=True)
        restore_aside(self.run_dir / "final")
        found = load_latest(self.run_dir, warn=warn)
        if found is None:
            raise ValueError(f"{self.run_dir}: no training checkpoint to resume from; start without --resume")
        path, state = found
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{path}: written by another cram version ({state.get('format', 'format 1')}); "
                             f"start a new run in another --out")
        if state["config_key"] != self.config_key:
            raise ValueError(f"{path}: was trained with another budget/arch/data/world size; resume with the same "
                             f"--budget/--arch/--data and number of processes, or use a new --out")
        for name, part in self.parts.items():
            part.load_state_dict(state[name])
        return path


def rng_state() -> dict[str, Any]:
    name, key, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"name": name, "key": torch.from_numpy(np.asarray(key, dtype=np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(run_dir: Path, micro_steps: int, state: dict[str, Any], keep: int,
               warn: Callable[[str], object] = print) -> Path:
    """Write the state in a temp folder and rename it into place, so a full disk or a kill mid-write leaves the
    previous checkpoint intact; then drop all but the newest `keep`."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{micro_steps:08d}"
    needed = _tensor_bytes(state)
    low = disk.low_space_warning(root, needed, "the checkpoint")
    if low:
        warn(low)
    try:
        with atomic_dir(final, force=True) as tmp, disk.RecordingFile(tmp / "state.pt") as handle:
            try:
                torch.save(state, handle)
            except RuntimeError:
                if handle.error is None:
                    raise
                raise handle.error from None  # torch only says "unexpected pos"; the errno says why
    except OSError as exc:
        if not disk.is_write_error(exc):
            raise
        raise disk.write_failure(exc, final / "state.pt", needed=needed, intact=resume_hint(run_dir)) from None
    for old in list_states(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def newest_state(run_dir: Path) -> str | None:
    """The name of the newest checkpoint (what a failed write leaves to resume from)."""
    states = list_states(run_dir)
    return states[-1].name if states else None


def resume_hint(run_dir: Path) -> str:
    """What a failed write during training leaves intact, and the command that continues."""
    newest = newest_state(run_dir)
    return (f"checkpoint {newest} is intact; free space and run with --resume" if newest else
            "no checkpoint was written yet; free space and start again with --force")


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def list_states(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    return sorted(p for p in root.glob("step_*") if p.is_dir()) if root.is_dir() else []


def load_latest(run_dir: Path, warn: Any = print) -> tuple[Path, dict[str, Any]] | None:
    """Newest readable state. Only a missing, truncated or corrupt file (what a crash or a full disk leaves)
    rolls back to the previous checkpoint, said through `warn`; a file that would run code to load is refused
    (UsageError) and any other error propagates."""
    for path in reversed(list_states(run_dir)):
        file = path / "state.pt"
        try:
            return path, load_state_file(file)
        except _Unreadable as exc:
            warn(f"{path.name}: skipped, {exc}; resuming from the checkpoint before it")
    return None


class _Unreadable(Exception):
    """A state file a crash or full disk damaged: missing, empty, truncated or with a broken archive."""


def load_state_file(file: Path) -> dict[str, Any]:
    """A training state, loaded with weights_only=True (tensors and plain values only)."""
    if not file.is_file():
        raise _Unreadable(f"{file.name} is missing")
    if file.stat().st_size == 0:
        raise _Unreadable(f"{file.name} is empty")
    refused = UsageError(f"{file}: refused: loading it would run code or build objects a cram training state "
                         f"never holds (a file from elsewhere, or from a cram before {STATE_FORMAT}); nothing "
                         f"was executed — start a new run in another --out")
    if not zipfile.is_zipfile(file):  # torch.save writes a zip archive; truncation loses its directory
        with open(file, "rb") as handle:
            if handle.read(1) == b"\x80":  # a bare pickle (protocol 2+): not cram's, never unpickled
                raise refused
        raise _Unreadable(f"{file.name} is truncated or corrupt (not a complete torch archive)")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise refused from None
    except (RuntimeError, EOFError, zipfile.BadZipFile) as exc:  # damaged records inside the archive
        raise _Unreadable(f"{file.name} is truncated or corrupt ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(state, dict):
        raise UsageError(f"{file}: not a cram training state (a {type(state).__name__}); start a new run")
    return state
