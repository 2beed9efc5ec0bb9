"""Atomic writes: whole or nothing, and results get ordinary permissions (not mkstemp's private 0600)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cramcli.utils import atomic
from cramcli.utils.errors import UsageError


def test_files_and_folders_get_umask_modes(tmp_path: Path) -> None:
    mask = os.umask(0)
    os.umask(mask)
    atomic.write_json(tmp_path / "r.json", {"a": 1})
    with atomic.atomic_dir(tmp_path / "out") as work:
        (work / "x").write_text("x")
    (tmp_path / "plain").write_text("x")  # what open() gives
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~mask


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic.atomic_dir(tmp_path / "out") as work:
        (work / "half").write_text("x")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    atomic.write_json(tmp_path / "r.json", {"a": 1})
    with pytest.raises(UsageError, match="--force"):
        atomic.check_not_exists(tmp_path / "r.json", force=False)
