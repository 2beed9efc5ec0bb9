"""Run the test suite with every direct dependency at the floor pyproject.toml declares.

A floor (`name>=X`) is a promise that cram works with X; this script keeps the promise honest. It derives a pip
constraints file from pyproject.toml — each entry of [project].dependencies and of the `dev` extra pinned to
its floor (`name==X`), torch pinned to the version installed in this Python (the local CPU wheel; a floor build
of torch is a multi-GB download) — installs cram with those pins into a fresh virtual environment, and runs
`python -m pytest -q` there. Exit status: pytest's; 1 when the environment cannot be built; 2 for a --venv
folder it did not make. CI (`.ci/run`) runs it after the main suite. Needs Python >= 3.11 (tomllib).

    python3 scripts/floors.py                     # a fresh venv under $TMPDIR (removed afterwards), then the suite
    python3 scripts/floors.py --venv DIR          # build (or rebuild) the venv in DIR and keep it
    python3 scripts/floors.py --print             # only print the constraints
    python3 scripts/floors.py -- -x tests/test_model.py   # arguments after -- go to pytest
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
PINNED_TO_INSTALLED = ("torch",)
"""Taken as installed here instead of at the floor."""
SAME_CODE = {"typer": "typer-slim"}
"""Distributions that ship the same package as a direct dependency (transformers 5.0 requires typer-slim): pinned
alongside it, so that one version of that code is installed and tested, not whichever wrote its files last."""
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*)(;.*)?$")


def constraints(pyproject: str, installed: dict[str, str]) -> list[str]:
    """One `name==version` line per direct dependency: its `>=` floor, or `installed[name]` for torch.

    Raises ValueError naming the entry when a dependency has no floor (a bare name promises every version).
    """
    project = tomllib.loads(pyproject)["project"]
    entries = list(project.get("dependencies", [])) + list(project.get("optional-dependencies", {}).get("dev", []))
    lines: list[str] = []
    for entry in entries:
        match = _REQUIREMENT.match(entry)
        if match is None:
            raise ValueError(f"pyproject.toml: cannot read dependency {entry!r}")
        name, _, specifiers, marker = match.groups()
        key = _normalise(name)
        if key in PINNED_TO_INSTALLED:
            if key not in installed:
                raise ValueError(f"pyproject.toml: {name} must be installed here first (it is pinned to this Python's)")
            version = installed[key].split("+", 1)[0]  # 2.13.0+cpu → 2.13.0: pip picks the local CPU wheel
        else:
            floors = [s.strip()[2:].strip() for s in specifiers.split(",") if s.strip().startswith(">=")]
            if not floors:
                raise ValueError(f"pyproject.toml: dependency {entry!r} has no '>=' floor; add the oldest version "
                                 "the suite passes with")
            version = floors[0]
        for pinned in (key, SAME_CODE.get(key)):
            if pinned:
                lines.append(f"{pinned}=={version}" + (f" ;{marker[1:]}" if marker else ""))
    return lines


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed(names: tuple[str, ...]) -> dict[str, str]:
    found = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def _run(command: list[str], **kwargs) -> int:
    print("+ " + " ".join(command), flush=True)
    return subprocess.run(command, **kwargs).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, help="keep the venv here (a new folder or one this script made)")
    parser.add_argument("--print", action="store_true", help="print the constraints and stop")
    parser.add_argument("pytest_args", nargs="*", help="after --: arguments for pytest (default: -q)")
    args = parser.parse_args(argv)

    pins = constraints((ROOT / "pyproject.toml").read_text(), _installed(PINNED_TO_INSTALLED))
    if args.print:
        print("\n".join(pins))
        return 0
    if args.venv is None:
        venv = Path(tempfile.mkdtemp(prefix="cram-floors-"))
        try:
            return _build_and_test(venv, pins, args.pytest_args)
        finally:
            shutil.rmtree(venv, ignore_errors=True)  # made by this run, so removed by it
    venv = args.venv.resolve()
    if venv.exists() and any(venv.iterdir()) and not (venv / "pyvenv.cfg").is_file():
        print(f"floors: --venv {venv}: not empty and not a virtual environment; choose a new folder",
              file=sys.stderr)
        return 2
    return _build_and_test(venv, pins, args.pytest_args)


def _build_and_test(venv: Path, pins: list[str], pytest_args: list[str]) -> int:
    started = time.perf_counter()
    if _run([sys.executable, "-m", "venv", "--clear", str(venv)]) != 0:
        return 1
    python = str(venv / "bin" / "python")
    # A current pip first: the venv's bundled one can fail reading a fresh wheel's metadata (a TypeError in its resolver).
    if _run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--upgrade", "pip"]) != 0:
        return 1
    file = venv / "constraints.txt"
    file.write_text("\n".join(pins) + "\n")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--constraint", str(file)]
    # torch first and alone, so the resolver never reaches for another build of it.
    torch_pin = next(p for p in pins if p.startswith("torch=="))
    if _run([*pip, torch_pin]) != 0 or _run([*pip, "-e", f"{ROOT}[dev]"]) != 0:
        print("floors: could not install the floors (see pip's message above)", file=sys.stderr)
        return 1
    installed = time.perf_counter() - started
    print(f"floors: installed in {installed:.0f} s:\n  " + "\n  ".join(pins), flush=True)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}", "VIRTUAL_ENV": str(venv)}
    env.pop("PYTHONPATH", None)
    rc = _run([python, "-m", "pytest", *(pytest_args or ["-q"])], cwd=ROOT, env=env)
    if rc == 5:  # pytest collected nothing: a broken suite, not a pass
        rc = 1
    print(f"floors: pytest exit {rc}; {time.perf_counter() - started:.0f} s in all ({installed:.0f} s install)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
