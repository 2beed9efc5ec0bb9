"""Stage `pretrain`: not implemented yet (see its issue)."""

from __future__ import annotations

from typing import Any

from cramcli.utils.errors import RunError


def run(output: Any, **flags: Any) -> None:
    raise RunError("cram pretrain: not implemented yet")
