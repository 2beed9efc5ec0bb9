"""How `cram demo` runs its stages in one folder: claiming the folder for these settings (or starting over), and
running each stage once, reusing it when its report says it finished."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cramcli.utils import atomic
from cramcli.utils.console import Output
from cramcli.utils.errors import RunError, UsageError

MARKER = "demo-settings.json"


def claim(out: Path, settings: dict[str, Any], fresh: bool) -> None:
    """Start over (--fresh), or keep what an earlier demo with the same settings finished."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; pass a folder")
    marker = out / MARKER
    if out.is_dir() and any(out.iterdir()) and not marker.is_file():
        raise UsageError(f"--out {out}: exists and is not a demo folder; choose another --out or remove it")
    if fresh and out.exists():
        shutil.rmtree(out)
    if marker.is_file() and json.loads(marker.read_text()) != settings:
        raise UsageError(f"--out {out}: holds a demo made with other settings ({marker}); pass --fresh to start over")
    # Written first: it marks the folder as the demo's (for --fresh) and the settings its stages were made with.
    atomic.write_json(marker, settings)


def step(output: Output, name: str, path: Path, call: Callable[[], Any], done: Path | None = None) -> dict[str, Any]:
    """Run one stage unless its report.json (or `done`) shows it finished; failures name the stage and its folder."""
    if (done or path / "report.json").is_file():
        output.info(f"[green]✓[/] {name}: reusing {path}")
        return {"path": str(path), "reused": True, "seconds": 0.0}
    output.console.rule(f"[bold]{name}[/]")
    t0 = time.perf_counter()
    try:
        call()
    except (UsageError, RunError) as exc:
        raise type(exc)(f"cram demo, stage {name} (folder {path}):", *exc.lines) from None
    return {"path": str(path), "reused": False, "seconds": round(time.perf_counter() - t0, 2)}


