"""Resumable training states: `RUN/checkpoints/step_XXXXXXXX/state.pt`, written atomically, the last K kept.

A state is one dict with an entry per trainer part (the model step, schedule clock, data cursor, RNG, metrics);
`Checkpointer` gathers them on save and hands each part its own entry back on resume.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from cramcli.utils.atomic import atomic_dir

STATE_FORMAT = "cram-train-state/2"


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

    def save(self, micro_steps: int) -> Path:
        state = {"format": STATE_FORMAT, "config_key": self.config_key,
                 **{name: part.state_dict() for name, part in self.parts.items()}}
        return save_state(self.run_dir, micro_steps, state, self.keep)

    def restore(self, warn: Callable[[str], object]) -> Path:
        """Load the newest readable state into the parts. ValueError (with the fix) when there is none or it
        belongs to other settings."""
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
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(run_dir: Path, micro_steps: int, state: dict[str, Any], keep: int) -> Path:
    """Write the state in a temp folder and rename it into place, so a full disk or a kill mid-write leaves the
    previous checkpoint intact; then drop all but the newest `keep`."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"step_{micro_steps:08d}"
    with atomic_dir(final, force=True) as tmp:
        torch.save(state, tmp / "state.pt")
    for old in list_states(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_states(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    return sorted(p for p in root.glob("step_*") if p.is_dir()) if root.is_dir() else []


def load_latest(run_dir: Path, warn: Any = print) -> tuple[Path, dict[str, Any]] | None:
    """Newest readable state; a corrupt newest one is reported through `warn` and the previous one used."""
    for path in reversed(list_states(run_dir)):
        try:
            return path, torch.load(path / "state.pt", map_location="cpu", weights_only=False)
        except Exception as exc:  # any unreadable/truncated pickle: fall back to an older checkpoint
            warn(f"{path}: checkpoint unreadable ({type(exc).__name__}); falling back to the previous one")
    return None
