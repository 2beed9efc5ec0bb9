"""Stage `card`: write README.md (the model card) into a checkpoint folder, from what cram recorded.

Beside the weights it also places the three budgets the model was made with (`data_budget_<name>.json`,
`arch_budget_<name>.json`, `train_budget_<name>.json`, loadable with `cram budgets validate`) and the charts
(`training.png` from the run, `glue.png` from the GLUE results), so the folder is complete for `cram push`.

The card's last line records a hash of the card and of each file written with it. A card (or one of those
files) that no longer matches was edited by hand, and is only replaced with --force; so is any README.md
cram did not write. Everything is checked before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from cramcli import budgets
from cramcli.publish import card as render
from cramcli.utils import atomic
from cramcli.utils.console import Output
from cramcli.utils.digest import weights_sha256
from cramcli.utils.errors import UsageError

README = "README.md"
DEFAULT_LICENSE = "openrail"
"""The license of the crammed-BERT cards on the hub; pass --license for your own choice."""


def run(
    output: Output,
    checkpoint: Annotated[Path, typer.Argument(help="A `cram pretrain` run folder or a checkpoint folder (RUN/final, a `cram convert` output).")],
    *,
    glue: Annotated[Optional[Path], typer.Option("--glue", help="GLUE results.json (or its folder) of this checkpoint (default: MODEL/glue/results.json).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Model name for the title and the table (default: crammed-bert-<budget>).")] = None,
    license: Annotated[str, typer.Option("--license", help="License id for the front matter (default: openrail, as the crammed-BERT cards).")] = "openrail",
    note: Annotated[Optional[str], typer.Option("--note", help="A paragraph added under the title, e.g. what the model is for.")] = None,
    repo_id: Annotated[Optional[str], typer.Option("--repo-id", help="Hub repo the How-to-use loads from (default: the folder's path).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a card (or a file beside it) that was edited by hand.")] = False,
) -> None:
    """Write the model card (README.md) into the checkpoint folder, from what cram recorded.

    Front matter, architecture and budget, tokens seen, final MLM loss, the GLUE table (medians over trials),
    How to use and the citation; the three budget files and the charts are placed beside the weights.
    Regenerating gives the same file; a card edited by hand is kept unless [bold]--force[/].
    """
    report = write_card(checkpoint, glue=glue, name=name, license=license, note=note, repo_id=repo_id, force=force)
    output.report(report, _table(report))


def write_card(checkpoint: Path, *, glue: Path | None = None, name: str | None = None,
               license: str = DEFAULT_LICENSE, note: str | None = None, repo_id: str | None = None,
               force: bool = False) -> dict[str, Any]:
    """Render and place the card and its files; returns what was written (the stage's report)."""
    given = Path(checkpoint)
    folder, config = find_checkpoint(given)
    digest = weights_sha256(folder)
    run_dir = _find_run(given, folder, digest)
    run_config = _read_json(run_dir / "run-config.json") if run_dir else None
    report = _read_json(run_dir / "report.json") if run_dir else None
    glue_file = _glue_results(glue, given, folder, run_dir)
    results = _read_json(glue_file) if glue_file else None
    if results is not None:
        _check_glue_is_for(results, glue_file, folder, digest)
    settings = _read_json(glue_file.parent / "hparams.json") if glue_file and (glue_file.parent / "hparams.json").is_file() else None

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
    training_png = _training_png(run_dir)
    if training_png is not None:
        files["training.png"], plots["training"] = training_png, "training.png"
    if results is not None:
        files["glue.png"], plots["glue"] = _glue_png(glue_file, results), "glue.png"

    title = name or f"crammed-bert-{budget_name or folder.name}"
    facts = render.CardFacts(
        name=title, license=license, load_from=repo_id or str(folder), config=config,
        num_parameters=_num_parameters(folder), run_config=run_config, report=report, glue=results,
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


# ----------------------------------------------------------------------------------------------------------
# finding what cram recorded


def find_checkpoint(given: Path) -> tuple[Path, dict[str, Any]]:
    from cramcli.model.checkpoint import WEIGHTS, resolve
    from cramcli.model.config import CrammedBertConfig

    folder = resolve(given)
    config_file = folder / "config.json"
    if not folder.is_dir() or not config_file.is_file() or not (folder / WEIGHTS).is_file():
        raise UsageError(f"{given}: not a cram checkpoint (config.json + {WEIGHTS}) nor a run folder with final/; "
                         "pass what `cram pretrain` wrote (RUN or RUN/final)")
    config = _read_json(config_file)
    if config.get("model_type") != CrammedBertConfig.model_type:
        raise UsageError(f"{config_file}: model_type {config.get('model_type')!r} is not cram's "
                         f"{CrammedBertConfig.model_type!r}; import an original checkpoint first with "
                         f"`cram convert {given} --attention pytorch --out NEW`")
    return folder, config


def _find_run(given: Path, folder: Path, digest: str | None, depth: int = 0) -> Path | None:
    """The pretrain run folder whose final/ holds these weights: the folder given, the parent of final/, or,
    for a `cram convert` output (its report.json names the source), the source's run when the weights match."""
    for candidate in (given, folder.parent if folder.name == "final" else None):
        if candidate is not None and (candidate / "run-config.json").is_file() and (candidate / "report.json").is_file():
            return candidate
    converted = folder / "report.json"
    if depth < 3 and converted.is_file():
        source = _read_json(converted).get("source")
        if isinstance(source, str) and "target_attention" in _read_json(converted):
            from cramcli.model.checkpoint import resolve

            src = resolve(Path(source))
            if src.is_dir() and src.resolve() != folder.resolve() and weights_sha256(src) == digest:
                return _find_run(Path(source), src, digest, depth + 1)
    return None


def _glue_results(glue: Path | None, given: Path, folder: Path, run_dir: Path | None) -> Path | None:
    if glue is not None:
        path = Path(glue) / "results.json" if Path(glue).is_dir() else Path(glue)
        if not path.is_file():
            raise UsageError(f"--glue {glue}: no GLUE results.json there; pass what `cram glue` wrote (OUT/results.json)")
        return path
    # `cram glue --model M` writes to M/glue by default, M being the run folder or the checkpoint.
    for base in (given, folder, run_dir):
        if base is not None and (base / "glue" / "results.json").is_file():
            return base / "glue" / "results.json"
    return None


def _check_glue_is_for(results: dict[str, Any], path: Path, folder: Path, digest: str | None) -> None:
    """Refuse GLUE numbers of other weights: by weight digest when recorded, else by the checkpoint's path."""
    theirs = results.get("checkpoint") or results.get("checkpoint_path")
    if not isinstance(results.get("tasks"), dict) or theirs is None:
        raise UsageError(f"{path}: not a `cram glue` results.json (no checkpoint/tasks); pass OUT/results.json")
    if results.get("weights_sha256"):
        same = results["weights_sha256"] == digest
    else:
        same = Path(results.get("checkpoint_path") or theirs).resolve() == folder.resolve()
    if not same:
        raise UsageError(f"{path}: GLUE results of checkpoint {theirs}, not of {folder} (other weights); pass the "
                         f"results of this checkpoint with --glue, or run `cram glue --model {folder}`")


def _training_png(run_dir: Path | None) -> bytes | None:
    """The run's own chart; drawn from metrics.jsonl for a run that predates the PNG."""
    if run_dir is None:
        return None
    if (run_dir / "training.png").is_file():
        return (run_dir / "training.png").read_bytes()
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        return None
    from cramcli.train.metrics import read_metrics
    from cramcli.utils.plots import training_png

    rows = read_metrics(metrics)
    return training_png(rows, f"cram pretrain — {run_dir.name}")


def _glue_png(glue_file: Path, results: dict[str, Any]) -> bytes:
    if (glue_file.parent / "glue.png").is_file():
        return (glue_file.parent / "glue.png").read_bytes()
    from cramcli.glue.metrics import CARD_COLUMNS, WNLI_COLUMN
    from cramcli.utils.plots import glue_png

    return glue_png(results["tasks"], [c for c, *_ in (*CARD_COLUMNS, WNLI_COLUMN)],
                    f"GLUE dev, median of {results.get('trials')} trial(s), {results.get('protocol')} protocol")


def _num_parameters(folder: Path) -> int:
    """Counted from the safetensors header (shapes only, no tensor is read); the tied decoder is stored once."""
    from safetensors import safe_open

    from cramcli.model.checkpoint import WEIGHTS

    with safe_open(str(folder / WEIGHTS), framework="pt") as handle:
        total = 0
        for key in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
            count = 1
            for dim in handle.get_slice(key).get_shape():
                count *= dim
            total += count
    return total


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{path}: unreadable JSON ({exc}); rerun the stage that wrote it") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object; rerun the stage that wrote it")
    return data


# ----------------------------------------------------------------------------------------------------------
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


def _table(report: dict[str, Any]) -> Table:
    table = Table(title="cram card", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("card", report["card"])
    table.add_row("from run", report["run"] or "not found (only config.json facts)")
    table.add_row("GLUE", report["glue"] or "no results (run `cram glue` first for the table)")
    if report["glue_row"]:
        table.add_row("GLUE row", " | ".join(report["glue_row"]))
    table.add_row("beside it", ", ".join(report["files"]) or "nothing")
    return table

