"""Resumable training states: `RUN/checkpoints/step_XXXXXXXX/state.pt`, written atomically, the last K kept."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cramcli.utils.atomic import atomic_dir


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
