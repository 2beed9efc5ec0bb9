"""Writing a model card (README.md) into a checkpoint folder, with the three budgets the model was made with
(`data_budget_<name>.json`, `arch_budget_<name>.json`, `train_budget_<name>.json`, loadable with
`cram budgets validate`) and the charts (`training.png`, `glue.png`), so the folder is complete for `cram push`.

The card's last line records a hash of the card and of each file written with it. A card (or one of those
files) that no longer matches was edited by hand, and is only replaced with `force`; so is any README.md cram
did not write. Everything is checked before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cramcli import budgets
from cramcli.publish import card as render
from cramcli.publish import recorded
from cramcli.utils import atomic
from cramcli.utils.digest import weights_sha256
from cramcli.utils.errors import UsageError
from cramcli.utils.jsonfile import read_object

README = "README.md"
DEFAULT_LICENSE = "openrail"
"""The license of the crammed-BERT cards on the hub; pass --license for your own choice."""


def write_card(checkpoint: Path, *, glue: Path | None = None, name: str | None = None,
               license: str = DEFAULT_LICENSE, note: str | None = None, repo_id: str | None = None,
               force: bool = False) -> dict[str, Any]:
    """Render and place the card and its files; returns what was written (the stage's report)."""
    given = Path(checkpoint)
    folder, config = recorded.cram_checkpoint(given)
    digest = weights_sha256(folder)
    run_dir = recorded.find_run(given, folder, digest)
    run_config = read_object(run_dir / "run-config.json") if run_dir else None
    report = read_object(run_dir / "report.json") if run_dir else None
    glue_file = recorded.glue_results(glue, given, folder, run_dir)
    results = read_object(glue_file) if glue_file else None
    if results is not None:
        recorded.check_glue_is_for(results, glue_file, folder, digest)
    settings = read_object(glue_file.parent / "hparams.json") if glue_file and (glue_file.parent / "hparams.json").is_file() else None

    budget_name = (report or {}).get("budget_name") or (run_dir.name if run_dir else None)
    files: dict[str, bytes] = {}
    budget_files: dict[str, str] = {}
    if run_config is not None and budget_name:
        for kind, data in (("data", run_config.get("data_budget")), ("arch", run_config.get("arch")),
                           ("train", run_config.get("train"))):
            if data:
                file = f"{kind}_budget_{budget_name}.json"
                budgets.parse(kind, run_dir / "run-config.json", data)  # what is copied must load again
                files[file] = (json.dumps(data, indent=2) + "\n").encode()
                budget_files[kind] = file
    plots = {}
    training_png = recorded.training_png(run_dir)
    if training_png is not None:
        files["training.png"], plots["training"] = training_png, "training.png"
    if results is not None:
        files["glue.png"], plots["glue"] = recorded.glue_png(glue_file, results), "glue.png"

    title = name or f"crammed-bert-{budget_name or folder.name}"
    facts = render.CardFacts(
        name=title, license=license, load_from=repo_id or str(folder), config=config,
        num_parameters=recorded.num_parameters(folder), run_config=run_config, report=report, glue=results,
        glue_settings=settings, budget_files=budget_files, plots=plots, note=note)
    inputs = {"glue": str(glue_file) if glue_file else None, "name": name, "license": license, "note": note,
              "repo_id": repo_id}
    body = render.render(facts)
    text = render.with_marker(body, {"files": {f: render.sha256(b) for f, b in sorted(files.items())},
                                     "inputs": inputs})
    previous = _previous_record(folder, force)
    for file, data in files.items():
        _check_replaceable(folder / file, data, previous, force)
    for file, data in files.items():
        atomic.write_bytes(folder / file, data)
    atomic.write_text(folder / README, text)  # last: a card always describes files that are there
    return {"card": str(folder / README), "checkpoint": str(folder), "run": str(run_dir) if run_dir else None,
            "glue": str(glue_file) if glue_file else None, "files": sorted(files), "name": title,
            "glue_row": render.glue_row(render.glue_columns(results)) if results else None}


def card_inputs(folder: Path) -> dict[str, Any] | None:
    """The inputs of the card in `folder` when it is cram's, unedited (push regenerates it for a repo id)."""
    path = Path(folder) / README
    if not path.is_file():
        return None
    record = render.read_marker(path.read_text(encoding="utf-8", errors="replace"))
    return None if record is None else record.get("inputs", {})



# never overwrite what a person edited


def _previous_record(folder: Path, force: bool) -> dict[str, Any]:
    path = folder / README
    if not path.exists():
        return {}
    record = render.read_marker(path.read_text(encoding="utf-8", errors="replace"))
    if record is None and not force:
        raise UsageError(f"{path}: edited by hand or not written by `cram card`; keep it, or pass --force to "
                         "replace it with a fresh card")
    return record or {}


def _check_replaceable(path: Path, data: bytes, previous: dict[str, Any], force: bool) -> None:
    if force or not path.exists():
        return
    current = render.sha256(path.read_bytes())
    if current == render.sha256(data) or previous.get("files", {}).get(path.name) == current:
        return  # the same content, or what the previous card wrote
    raise UsageError(f"{path}: exists and was not written by `cram card` (or was edited); pass --force to replace it")
