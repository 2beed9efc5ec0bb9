"""The dependency-floors CI step: constraints derived from pyproject.toml, the order the step installs in, its
exit codes, and CI running it after the README's test command. The step itself (a venv with every floor) runs
in `.ci/run`; here its logic runs with the commands recorded instead of executed."""

from __future__ import annotations

import importlib.util
import re
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = (ROOT / "pyproject.toml").read_text()


def _floors_module():
    spec = importlib.util.spec_from_file_location("floors", ROOT / "scripts" / "floors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


floors = _floors_module()


def _direct_dependencies() -> list[Requirement]:
    project = tomllib.loads(PYPROJECT)["project"]
    return [Requirement(e) for e in project["dependencies"] + project["optional-dependencies"]["dev"]]


def test_every_direct_dependency_is_pinned_to_its_floor() -> None:
    pins = floors.constraints(PYPROJECT, {"torch": "2.13.0+cpu"})
    pinned = dict(line.split("==") for line in pins)
    for req in _direct_dependencies():
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name == "torch":
            assert pinned["torch"] == "2.13.0"  # the local CPU wheel, its +cpu tag dropped so pip finds the file
            continue
        (floor,) = [s.version for s in req.specifier if s.operator == ">="]
        assert pinned[name] == floor, f"{req}: pinned {pinned.get(name)}"
    assert pinned["typer-slim"] == pinned["typer"]  # the same package under two names moves together
    assert len(pins) == len(_direct_dependencies()) + 1


def test_a_dependency_without_a_floor_is_refused_by_name() -> None:
    text = PYPROJECT.replace('"rich>=13.7"', '"rich"')
    with pytest.raises(ValueError, match=r"'rich' has no '>=' floor"):
        floors.constraints(text, {"torch": "2.13.0"})
    with pytest.raises(ValueError, match="torch must be installed here first"):
        floors.constraints(PYPROJECT, {})


def test_the_installed_versions_are_at_or_above_the_floors() -> None:
    """A floor above what this environment runs would be a promise the main suite never tested."""
    for req in _direct_dependencies():
        installed = Version(metadata.version(req.name))
        assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed} outside {req.specifier}"


def test_the_step_installs_torch_first_then_cram_then_runs_pytest(monkeypatch, tmp_path) -> None:
    calls: list[list[str]] = []
    codes = {"pytest": 0}

    def fake_run(command: list[str], **kwargs) -> int:
        calls.append(command)
        if command[1:3] == ["-m", "venv"]:
            Path(command[-1]).mkdir(exist_ok=True)
            (Path(command[-1]) / "pyvenv.cfg").write_text("home = here\n")
        return codes["pytest"] if "pytest" in command else 0

    monkeypatch.setattr(floors, "_run", fake_run)
    venv = tmp_path / "venv"
    assert floors.main(["--venv", str(venv), "--", "-x", "tests/test_model.py"]) == 0
    python = str(venv.resolve() / "bin" / "python")
    assert calls[0][1:] == ["-m", "venv", "--clear", str(venv.resolve())]
    installs = [c for c in calls if c[:4] == [python, "-m", "pip", "install"] and "--constraint" in c]
    assert installs[0][-1].startswith("torch==") and installs[1][-2:] == ["-e", f"{floors.ROOT}[dev]"]
    constraint_file = Path(installs[0][installs[0].index("--constraint") + 1])
    assert constraint_file.read_text().splitlines() == floors.constraints(PYPROJECT, floors._installed(("torch",)))
    assert calls[-1] == [python, "-m", "pytest", "-x", "tests/test_model.py"]
    codes["pytest"] = 5  # nothing collected is a failure, not a pass
    assert floors.main(["--venv", str(venv)]) == 1
    codes["pytest"] = 3
    assert floors.main(["--venv", str(venv)]) == 3


def test_the_default_venv_is_made_for_the_run_and_removed_after(monkeypatch) -> None:
    made: list[Path] = []

    def fake_run(command: list[str], **kwargs) -> int:
        if command[1:3] == ["-m", "venv"]:
            made.append(Path(command[-1]))
            assert made[-1].is_dir() and made[-1].name.startswith("cram-floors-")
        return 0

    monkeypatch.setattr(floors, "_run", fake_run)
    assert floors.main([]) == 0
    assert made and not made[0].exists()


def test_a_foreign_venv_folder_is_refused_untouched(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(floors, "_run", lambda *a, **k: pytest.fail("nothing may run"))
    (tmp_path / "notes.txt").write_text("mine")
    assert floors.main(["--venv", str(tmp_path)]) == 2
    assert "not a virtual environment" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_ci_runs_the_readme_test_command_then_the_floors() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "python3 -m pytest -q" in readme and "python3 -m pytest -q" in ci
    floors_line = next(i for i, line in enumerate(ci) if line.startswith("python3 scripts/floors.py"))
    assert ci.index("python3 -m pytest -q") < floors_line and "exit 1" in ci[floors_line]
